//! The conformance suite: what every backend must do, written once against the traits. Each
//! backend's tests call [`run`] on a fresh store; a backend passes only if every check holds.
//! Checks use their own e-mail addresses, so they need no cleanup between them.

use time::{Duration, OffsetDateTime};
use tomato_domain::{Email, PersonName, Role, UserId};
use uuid::Uuid;

use crate::{SignIn, StoreError, Stores};

/// Runs every check against `stores`, panicking with a description at the first failure.
pub async fn run(stores: &Stores) {
    stores.backend.ping().await.expect("ping answers");
    first_sign_in_creates_a_customer(stores).await;
    later_sign_ins_refresh_the_profile(stores).await;
    admin_sign_in_and_grant(stores).await;
    role_changes_bump_the_version(stores).await;
    concurrent_sign_ins_make_one_user(stores).await;
    revocations_are_kept_until_expiry(stores).await;
}

fn email(local: &str) -> Email {
    Email::parse(&format!("{local}@conformance.test")).expect("test email")
}

fn sign_in(local: &str, name: &str) -> SignIn {
    SignIn {
        email: email(local),
        name: PersonName::parse(name).expect("test name"),
        image: None,
        admin: false,
    }
}

async fn first_sign_in_creates_a_customer(stores: &Stores) {
    let user = stores
        .users
        .sign_in(sign_in("first", "First Person"))
        .await
        .expect("sign in");
    assert_eq!(user.role, Role::Customer);
    assert_eq!(user.role_version, 0);
    assert_eq!(user.email, email("first"));
    assert_eq!(user.image, None);
    let age = OffsetDateTime::now_utc() - user.created_at;
    assert!(
        age >= Duration::ZERO && age < Duration::minutes(1),
        "created just now"
    );

    assert_eq!(
        stores.users.get(user.id).await.expect("get"),
        Some(user.clone())
    );
    assert_eq!(
        stores
            .users
            .find_by_email(&email("first"))
            .await
            .expect("find"),
        Some(user)
    );
    assert_eq!(
        stores.users.get(UserId::new()).await.expect("get unknown"),
        None
    );
    assert_eq!(
        stores
            .users
            .find_by_email(&email("nobody"))
            .await
            .expect("find unknown"),
        None
    );
}

async fn later_sign_ins_refresh_the_profile(stores: &Stores) {
    let first = stores
        .users
        .sign_in(SignIn {
            image: Some("https://img.test/a.png".into()),
            ..sign_in("again", "Old Name")
        })
        .await
        .expect("first sign in");
    let second = stores
        .users
        .sign_in(sign_in("again", "New Name"))
        .await
        .expect("second sign in");
    assert_eq!(second.id, first.id, "same e-mail, same user");
    assert_eq!(second.name.as_str(), "New Name");
    assert_eq!(
        second.image.as_deref(),
        Some("https://img.test/a.png"),
        "no image keeps the old one"
    );
    assert_eq!(second.created_at, first.created_at);
    assert_eq!(stores.users.get(first.id).await.expect("get"), Some(second));
}

async fn admin_sign_in_and_grant(stores: &Stores) {
    let admin = stores
        .users
        .sign_in(SignIn {
            admin: true,
            ..sign_in("boss", "Boss")
        })
        .await
        .expect("admin sign in");
    assert_eq!(admin.role, Role::Admin);

    let promoted_later = stores
        .users
        .sign_in(sign_in("promoted", "Promoted"))
        .await
        .expect("sign in");
    let promoted = stores
        .users
        .sign_in(SignIn {
            admin: true,
            ..sign_in("promoted", "Promoted")
        })
        .await
        .expect("admin sign in");
    assert_eq!(promoted.id, promoted_later.id);
    assert_eq!(promoted.role, Role::Admin);
    assert!(
        promoted.role_version > promoted_later.role_version,
        "old tokens go stale"
    );

    let granted = stores
        .users
        .grant_admin(&email("granted"))
        .await
        .expect("grant new");
    assert_eq!(granted.role, Role::Admin);
    assert_eq!(granted.name.as_str(), "granted");
    let again = stores
        .users
        .grant_admin(&email("granted"))
        .await
        .expect("grant again");
    assert_eq!(again, granted, "granting twice changes nothing");
    let signed_in = stores
        .users
        .sign_in(sign_in("granted", "Granted Person"))
        .await
        .expect("sign in after grant");
    assert_eq!(signed_in.id, granted.id);
    assert_eq!(
        signed_in.role,
        Role::Admin,
        "a plain sign-in keeps a granted role"
    );
}

async fn role_changes_bump_the_version(stores: &Stores) {
    let user = stores
        .users
        .sign_in(sign_in("switcher", "Switcher"))
        .await
        .expect("sign in");
    let seller = stores
        .users
        .set_role(user.id, Role::Seller)
        .await
        .expect("to seller");
    assert_eq!(seller.role, Role::Seller);
    assert_eq!(seller.role_version, user.role_version + 1);
    let same = stores
        .users
        .set_role(user.id, Role::Seller)
        .await
        .expect("same role");
    assert_eq!(same.role_version, seller.role_version, "no change, no bump");
    let back = stores
        .users
        .set_role(user.id, Role::Customer)
        .await
        .expect("back");
    assert_eq!(back.role_version, seller.role_version + 1);
    assert_eq!(stores.users.get(user.id).await.expect("get"), Some(back));

    assert!(matches!(
        stores.users.set_role(UserId::new(), Role::Rider).await,
        Err(StoreError::NotFound)
    ));
}

async fn concurrent_sign_ins_make_one_user(stores: &Stores) {
    let attempts = (0..16).map(|_| {
        let users = stores.users.clone();
        tokio::spawn(async move { users.sign_in(sign_in("crowd", "Crowd")).await })
    });
    let mut ids = Vec::new();
    for attempt in attempts {
        let user = attempt.await.expect("task").expect("sign in");
        ids.push(user.id);
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "one e-mail, one user");
}

async fn revocations_are_kept_until_expiry(stores: &Stores) {
    let now = OffsetDateTime::now_utc();
    let live = Uuid::new_v4();
    let dead = Uuid::new_v4();
    assert!(!stores.tokens.is_revoked(live).await.expect("check"));

    stores
        .tokens
        .revoke(live, now + Duration::hours(1))
        .await
        .expect("revoke");
    stores
        .tokens
        .revoke(live, now + Duration::hours(1))
        .await
        .expect("revoke twice");
    stores
        .tokens
        .revoke(dead, now - Duration::hours(1))
        .await
        .expect("revoke expired");
    assert!(stores.tokens.is_revoked(live).await.expect("check"));
    assert!(stores.tokens.is_revoked(dead).await.expect("check"));

    let purged = stores.tokens.purge_expired(now).await.expect("purge");
    assert!(purged >= 1);
    assert!(
        stores.tokens.is_revoked(live).await.expect("check"),
        "unexpired stays"
    );
    assert!(
        !stores.tokens.is_revoked(dead).await.expect("check"),
        "expired goes"
    );
}
