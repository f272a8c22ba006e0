//! Per-request authentication cost: every authenticated call, the location hot path included,
//! verifies a token and then checks revocation and the user's current role in the store.
//!
//! Run with `cargo bench --bench auth`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tomato::auth::extract::authenticate;
use tomato::config::Settings;
use tomato::state::AppState;
use tomato_domain::{Email, PersonName};
use tomato_store::SignIn;

fn bench_auth(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("empty.toml");
    std::fs::write(&config, "").expect("write config");
    let settings = Settings::load(Some(&config), Vec::<(String, String)>::new()).expect("settings");
    let stores = tomato_store_embedded::open(dir.path()).expect("store");
    let state = AppState::new(settings, stores).expect("state");
    let user = runtime
        .block_on(state.stores.users.sign_in(SignIn {
            email: Email::parse("bench@example.com").expect("email"),
            name: PersonName::parse("Bench").expect("name"),
            image: None,
            admin: false,
        }))
        .expect("sign in");
    let (token, _) = state.tokens.issue(&user).expect("issue");

    c.bench_function("token_issue", |b| {
        b.iter(|| state.tokens.issue(black_box(&user)).expect("issue"))
    });
    c.bench_function("token_verify", |b| {
        b.iter(|| state.tokens.verify(black_box(&token)).expect("verify"))
    });
    // An HTTP request presenting a token the node has seen: remembered by its text, so only
    // the clock is read.
    c.bench_function("token_verify_remembered", |b| {
        b.iter(|| {
            state
                .tokens
                .verify_request(black_box(&token))
                .expect("verify")
        })
    });
    // 100 000 riders posting positions over HTTP in turn: more tokens than the memory keeps
    // (65 536), so some are checked in full every time.
    let riders: Vec<String> = (0..100_000)
        .map(|_| state.tokens.issue(&user).expect("issue").0)
        .collect();
    let mut turn = 0;
    c.bench_function("token_verify_100k_riders_in_turn", |b| {
        b.iter(|| {
            turn = (turn + 1) % riders.len();
            state
                .tokens
                .verify_request(black_box(&riders[turn]))
                .expect("verify")
        })
    });
    // The usual request: user and token liveness answered by the node's cache.
    c.bench_function("authenticate_cached", |b| {
        b.to_async(&runtime)
            .iter(|| async { authenticate(&state, black_box(&token)).await.expect("auth") })
    });
    // Right after the user changed: the user is read from the store again.
    c.bench_function("authenticate_user_from_store", |b| {
        b.to_async(&runtime).iter(|| async {
            state.auth_cache.user_changed(user.id);
            authenticate(&state, black_box(&token)).await.expect("auth")
        })
    });
    runtime
        .block_on(state.stores.backend.close())
        .expect("close");
}

criterion_group!(benches, bench_auth);
criterion_main!(benches);
