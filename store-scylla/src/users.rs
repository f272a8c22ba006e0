//! Users and revoked tokens' owners: users by id, e-mails claimed once (`users_by_email`), role
//! changes as a compare-and-set on the role version.

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use scylla::DeserializeRow;
use time::OffsetDateTime;
use tomato_domain::{Email, PersonName, Role, User, UserId};
use tomato_store::{AuthChange, SignIn, StoreError, UserStore};

use crate::db::Cql;
use tomato_domain::millis::now_ms;

use crate::{ScyllaStore, parse_col};

/// How often a role change retries a lost compare-and-set before giving up.
const ROLE_RETRIES: usize = 8;

#[derive(DeserializeRow)]
struct UserRow {
    id: String,
    email: String,
    name: String,
    image: Option<String>,
    role: String,
    role_version: i64,
    created_at: OffsetDateTime,
}

impl UserRow {
    fn into_user(self) -> Result<User, StoreError> {
        Ok(User {
            id: parse_col("user id", &self.id, str::parse)?,
            name: parse_col("name", &self.name, PersonName::parse)?,
            email: parse_col("email", &self.email, Email::parse)?,
            image: self.image,
            role: parse_col("role", &self.role, str::parse)?,
            role_version: u32::try_from(self.role_version)
                .map_err(|err| StoreError::Corrupt(format!("role version: {err}")))?,
            created_at: self.created_at,
        })
    }
}

const SELECT_USER: Cql =
    cql!("SELECT id, email, name, image, role, role_version, created_at FROM users WHERE id = ?");

impl ScyllaStore {
    async fn user(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.db
            .row::<UserRow>(SELECT_USER, (id,))
            .await?
            .map(UserRow::into_user)
            .transpose()
    }

    /// The user holding `email`'s claim, completing a sign-up a crash cut short (the claim is
    /// written after the user's row, so a claim always points at a row).
    async fn user_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        let claim: Option<(String,)> = self
            .db
            .row(
                cql!("SELECT user_id FROM users_by_email WHERE email = ?"),
                (email.as_str(),),
            )
            .await?;
        match claim {
            Some((id,)) => self.user(&id).await,
            None => Ok(None),
        }
    }

    /// Creates a user with `email`, or returns whoever claimed the e-mail first.
    async fn create_user(
        &self,
        email: Email,
        name: PersonName,
        image: Option<String>,
        role: Role,
    ) -> Result<(User, bool), StoreError> {
        let user = User {
            id: UserId::new(),
            name,
            email,
            image,
            role,
            role_version: 0,
            created_at: now_ms(),
        };
        // The row first, then the claim: a claim never points at nothing, and a row whose claim
        // lost is an orphan nobody can reach, removed at once. Conditional, as every write of
        // a user's row is: a role change right after sign-up is a Paxos write on the same
        // cells, and Paxos and plain timestamps come from different clocks.
        self.db
            .applied(
                cql!(
                    "INSERT INTO users (id, email, name, image, role, role_version, created_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"
                ),
                (
                    user.id.to_string(),
                    user.email.as_str(),
                    user.name.as_str(),
                    user.image.as_deref(),
                    user.role.as_str(),
                    i64::from(user.role_version),
                    user.created_at,
                ),
            )
            .await?;
        if self
            .db
            .applied(
                cql!("INSERT INTO users_by_email (email, user_id) VALUES (?, ?) IF NOT EXISTS"),
                (user.email.as_str(), user.id.to_string()),
            )
            .await?
        {
            self.count("users", 1).await;
            return Ok((user, true));
        }
        self.db
            .applied(
                cql!("DELETE FROM users WHERE id = ? IF EXISTS"),
                (user.id.to_string(),),
            )
            .await?;
        let winner = self
            .user_by_email(&user.email)
            .await?
            .ok_or_else(|| StoreError::Unavailable("a racing sign-up is not visible yet".into()))?;
        Ok((winner, false))
    }

    /// Sets the role, bumping the version on a real change, as a compare-and-set on the version
    /// read (a racing change makes this one read again).
    async fn change_role(&self, mut user: User, role: Role) -> Result<User, StoreError> {
        for _ in 0..ROLE_RETRIES {
            if user.role == role {
                return Ok(user);
            }
            let next = user.role_version + 1;
            if self
                .db
                .applied(
                    cql!("UPDATE users SET role = ?, role_version = ? WHERE id = ? IF role_version = ?"),
                    (
                        role.as_str(),
                        i64::from(next),
                        user.id.to_string(),
                        i64::from(user.role_version),
                    ),
                )
                .await?
            {
                user.role = role;
                user.role_version = next;
                return Ok(user);
            }
            user = self
                .user(&user.id.to_string())
                .await?
                .ok_or(StoreError::NotFound)?;
        }
        Err(StoreError::Unavailable(
            "the user's role keeps changing".into(),
        ))
    }
}

impl ScyllaStore {
    /// Records (or forgets) that `user` is an admin because `auth.admin_emails` names them.
    async fn mark_config_admin(&self, user: &User, by_config: bool) -> Result<(), StoreError> {
        let cql = if by_config {
            cql!("INSERT INTO config_admins (user_id) VALUES (?)")
        } else {
            cql!("DELETE FROM config_admins WHERE user_id = ?")
        };
        self.db.run(cql, (user.id.to_string(),)).await.map(drop)
    }

    async fn is_config_admin(&self, user: &User) -> Result<bool, StoreError> {
        let row: Option<(String,)> = self
            .db
            .row(
                cql!("SELECT user_id FROM config_admins WHERE user_id = ?"),
                (user.id.to_string(),),
            )
            .await?;
        Ok(row.is_some())
    }
}

#[async_trait]
impl UserStore for ScyllaStore {
    async fn sign_in(&self, sign_in: SignIn) -> Result<User, StoreError> {
        let existing = match self.user_by_email(&sign_in.email).await? {
            Some(user) => user,
            None => {
                let role = if sign_in.admin {
                    Role::Admin
                } else {
                    Role::Customer
                };
                let (user, created) = self
                    .create_user(
                        sign_in.email.clone(),
                        sign_in.name.clone(),
                        sign_in.image.clone(),
                        role,
                    )
                    .await?;
                if created {
                    if sign_in.admin {
                        self.mark_config_admin(&user, true).await?;
                    }
                    return Ok(user);
                }
                user
            }
        };
        let mut user = existing;
        let before = user.clone();
        user.name = sign_in.name;
        if sign_in.image.is_some() {
            user.image = sign_in.image;
        }
        // Most sign-ins change nothing: they write nothing and record nothing in the feed.
        if (&user.name, &user.image) != (&before.name, &before.image) {
            self.db
                .applied(
                    cql!("UPDATE users SET name = ?, image = ? WHERE id = ? IF EXISTS"),
                    (
                        user.name.as_str(),
                        user.image.as_deref(),
                        user.id.to_string(),
                    ),
                )
                .await?;
        }
        if sign_in.admin {
            // The mark first: a mark without the role is harmless, demotion checks both.
            self.mark_config_admin(&user, true).await?;
            user = self.change_role(user, Role::Admin).await?;
        } else if user.role == Role::Admin && self.is_config_admin(&user).await? {
            // Off the list, and it was the list that made them admin.
            user = self.change_role(user, Role::Customer).await?;
            self.mark_config_admin(&user, false).await?;
        }
        if user != before {
            self.record(AuthChange::UserChanged(user.id)).await;
        }
        Ok(user)
    }

    async fn get(&self, id: UserId) -> Result<Option<User>, StoreError> {
        self.user(&id.to_string()).await
    }

    async fn get_many(&self, ids: &[UserId]) -> Result<Vec<User>, StoreError> {
        // Point reads in flight together: each goes to its partition's replicas, which an
        // `IN` over many partitions would funnel through one coordinator.
        let found: Vec<Option<User>> = futures_util::stream::iter(ids.to_vec())
            .map(|id| self.get(id))
            .buffer_unordered(crate::IN_FLIGHT)
            .try_collect()
            .await?;
        Ok(found.into_iter().flatten().collect())
    }

    async fn find_by_email(&self, email: &Email) -> Result<Option<User>, StoreError> {
        self.user_by_email(email).await
    }

    async fn set_role(&self, id: UserId, role: Role) -> Result<User, StoreError> {
        let user = self
            .user(&id.to_string())
            .await?
            .ok_or(StoreError::NotFound)?;
        let user = self.change_role(user, role).await?;
        // Even when nothing changed: a retry after a crash between the change and its record
        // records it then.
        self.record(AuthChange::UserChanged(user.id)).await;
        Ok(user)
    }

    async fn grant_admin(&self, email: &Email) -> Result<User, StoreError> {
        let user = match self.user_by_email(email).await? {
            Some(user) => user,
            None => {
                let name = PersonName::from_email(email);
                self.create_user(email.clone(), name, None, Role::Admin)
                    .await?
                    .0
            }
        };
        // Granted: an admin that outlives the configured list.
        self.mark_config_admin(&user, false).await?;
        let user = self.change_role(user, Role::Admin).await?;
        self.record(AuthChange::UserChanged(user.id)).await;
        Ok(user)
    }
}
