//! Users in SQLite.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Row, params};
use tomato_domain::{Email, PersonName, Role, User, UserId};

use crate::changes::record;
use crate::{EmbeddedStore, from_millis, to_millis};
use tomato_store::{AuthChange, SignIn, StoreError, UserStore};

const COLUMNS: &str = "id, email, name, image, role, role_version, created_at";

#[async_trait]
impl UserStore for EmbeddedStore {
    async fn sign_in(&self, sign_in: SignIn) -> Result<User, StoreError> {
        let origin = self.origin;
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let user = match select_by_email(&tx, &sign_in.email)? {
                    Some(mut user) => {
                        user.name = sign_in.name;
                        if sign_in.image.is_some() {
                            user.image = sign_in.image;
                        }
                        let id = user.id.to_string();
                        if sign_in.admin {
                            tx.execute(
                                "INSERT INTO config_admins (user_id) VALUES (?1)
                                 ON CONFLICT (user_id) DO NOTHING",
                                [&id],
                            )?;
                            if user.role != Role::Admin {
                                user.role = Role::Admin;
                                user.role_version += 1;
                            }
                        } else if user.role == Role::Admin
                            && tx.execute("DELETE FROM config_admins WHERE user_id = ?1", [&id])?
                                == 1
                        {
                            // Off the list, and it was the list that made them admin.
                            user.role = Role::Customer;
                            user.role_version += 1;
                        }
                        tx.execute(
                            "UPDATE users SET name = ?2, image = ?3, role = ?4, role_version = ?5
                             WHERE id = ?1",
                            params![
                                user.id.to_string(),
                                user.name.as_str(),
                                user.image,
                                user.role.as_str(),
                                user.role_version
                            ],
                        )?;
                        record(&tx, origin, AuthChange::UserChanged(user.id))?;
                        user
                    }
                    None => {
                        let role = if sign_in.admin {
                            Role::Admin
                        } else {
                            Role::Customer
                        };
                        let user = insert(&tx, sign_in.email, sign_in.name, sign_in.image, role)?;
                        if sign_in.admin {
                            tx.execute(
                                "INSERT INTO config_admins (user_id) VALUES (?1)",
                                [user.id.to_string()],
                            )?;
                        }
                        user
                    }
                };
                tx.commit()?;
                Ok(user)
            })
            .await
    }

    async fn get(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.db
            .read(move |conn| {
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
                    .query_row([id.to_string()], map_row)
                    .optional()?
                    .transpose()
            })
            .await
    }

    async fn get_many(&self, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = ids.iter().map(ToString::to_string).collect();
        // One blocking task and one cached statement for the whole batch: a point read costs
        // microseconds, the hop to a reader thread more than that.
        self.db
            .read(move |conn| {
                let mut select =
                    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?;
                let mut found = Vec::with_capacity(ids.len());
                for id in &ids {
                    if let Some(user) = select.query_row([id], map_row).optional()? {
                        found.push(user?);
                    }
                }
                Ok(found)
            })
            .await
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let email = email.clone();
        self.db
            .read(move |conn| select_by_email(conn, &email))
            .await
    }

    async fn set_role(&self, id: UserId, role: Role) -> Result<User, StoreError> {
        let origin = self.origin;
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let mut user = tx
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE id = ?1"))?
                    .query_row([id.to_string()], map_row)
                    .optional()?
                    .transpose()?
                    .ok_or(StoreError::NotFound)?;
                if user.role != role {
                    user.role = role;
                    user.role_version += 1;
                    tx.execute(
                        "UPDATE users SET role = ?2, role_version = ?3 WHERE id = ?1",
                        params![id.to_string(), role.as_str(), user.role_version],
                    )?;
                    record(&tx, origin, AuthChange::UserChanged(id))?;
                }
                tx.commit()?;
                Ok(user)
            })
            .await
    }

    async fn grant_admin(&self, email: &Email) -> Result<User, StoreError> {
        let email = email.clone();
        let origin = self.origin;
        self.db
            .write(move |conn| {
                let tx = conn.transaction()?;
                let found = select_by_email(&tx, &email)?;
                if let Some(user) = &found {
                    // Granted: an admin that outlives the configured list.
                    tx.execute(
                        "DELETE FROM config_admins WHERE user_id = ?1",
                        [user.id.to_string()],
                    )?;
                }
                let user = match found {
                    Some(user) if user.role == Role::Admin => user,
                    Some(mut user) => {
                        user.role = Role::Admin;
                        user.role_version += 1;
                        tx.execute(
                            "UPDATE users SET role = 'admin', role_version = ?2 WHERE id = ?1",
                            params![user.id.to_string(), user.role_version],
                        )?;
                        record(&tx, origin, AuthChange::UserChanged(user.id))?;
                        user
                    }
                    None => {
                        let name = PersonName::from_email(&email);
                        insert(&tx, email, name, None, Role::Admin)?
                    }
                };
                tx.commit()?;
                Ok(user)
            })
            .await
    }
}

fn select_by_email(conn: &Connection, email: &Email) -> Result<Option<User>, StoreError> {
    conn.prepare_cached(&format!("SELECT {COLUMNS} FROM users WHERE email = ?1"))?
        .query_row([email.as_str()], map_row)
        .optional()?
        .transpose()
}

fn insert(
    conn: &Connection,
    email: Email,
    name: PersonName,
    image: Option<String>,
    role: Role,
) -> Result<User, StoreError> {
    let user = User {
        id: UserId::new(),
        name,
        email,
        image,
        role,
        role_version: 0,
        created_at: tomato_domain::millis::now_ms(),
    };
    conn.execute(
        "INSERT INTO users (id, email, name, image, role, role_version, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            user.id.to_string(),
            user.email.as_str(),
            user.name.as_str(),
            user.image,
            user.role.as_str(),
            user.role_version,
            to_millis(user.created_at)
        ],
    )?;
    Ok(user)
}

/// Reads a row; the outer `Result` is SQLite's, the inner one says whether the row made sense.
fn map_row(row: &Row<'_>) -> rusqlite::Result<Result<User, StoreError>> {
    let id: String = row.get(0)?;
    let email: String = row.get(1)?;
    let name: String = row.get(2)?;
    let image: Option<String> = row.get(3)?;
    let role: String = row.get(4)?;
    let role_version: u32 = row.get(5)?;
    let created_at: i64 = row.get(6)?;
    Ok((|| {
        let corrupt = |what: &str, err: &dyn std::fmt::Display| {
            StoreError::Corrupt(format!("user {id}: {what}: {err}"))
        };
        Ok(User {
            id: id.parse().map_err(|err| corrupt("id", &err))?,
            email: Email::parse(&email).map_err(|err| corrupt("email", &err))?,
            name: PersonName::parse(&name).map_err(|err| corrupt("name", &err))?,
            image,
            role: role.parse().map_err(|err| corrupt("role", &err))?,
            role_version,
            created_at: from_millis(created_at)?,
        })
    })())
}
