//! [`AccountStore`] over sea-orm: users, refresh tokens, external identities.

use async_trait::async_trait;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, Set,
    TransactionTrait,
};

use super::entity::{
    external_identities as external_identity, refresh_tokens as refresh_token, users as user,
};
use super::{AccountStore, RefreshToken, Rotation, SeaStore, SignIn, StoreError, User};
use crate::domain::{UserId, new_id, now_ms};

#[async_trait]
impl AccountStore for SeaStore {
    async fn create_user(&self, username: &str, password_hash: &str) -> Result<User, StoreError> {
        let model = user::ActiveModel {
            id: Set(new_id()),
            username: Set(username.to_owned()),
            password_hash: Set(password_hash.to_owned()),
            created_at: Set(now_ms()),
            operator: Set(false),
        };
        match model.insert(&self.db).await {
            Ok(user) => Ok(user.into()),
            Err(e) if StoreError::is_unique_violation(&e) => {
                Err(StoreError::Conflict("username is taken".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        Ok(user::Entity::find()
            .filter(user::Column::Username.eq(username))
            .one(&self.db)
            .await?
            .map(User::from))
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>, StoreError> {
        Ok(user::Entity::find_by_id(id.to_string())
            .one(&self.db)
            .await?
            .map(User::from))
    }

    async fn set_operator(&self, username: &str, operator: bool) -> Result<bool, StoreError> {
        let result = user::Entity::update_many()
            .col_expr(user::Column::Operator, Expr::value(operator))
            .filter(user::Column::Username.eq(username))
            .exec(&self.db)
            .await?;
        Ok(result.rows_affected > 0)
    }

    // === refresh tokens ===

    async fn issue_refresh_token(
        &self,
        user_id: &UserId,
        token_hash: &str,
        expires_at: i64,
    ) -> Result<RefreshToken, StoreError> {
        let model = new_refresh_token(new_id(), user_id, &new_id(), token_hash, expires_at);
        match model.insert(&self.db).await {
            Ok(token) => Ok(token.into()),
            Err(e) if is_foreign_key_violation(&e) => Err(StoreError::NotFound("user")),
            Err(e) => Err(e.into()),
        }
    }

    async fn rotate_refresh_token(
        &self,
        token_hash: &str,
        next_hash: &str,
        expires_at: i64,
        family_ttl_ms: Option<i64>,
    ) -> Result<Rotation, StoreError> {
        let txn = self.db.begin().await?;
        let now = now_ms();
        let next_id = new_id();
        // A conditional write first: of concurrent rotations of one token,
        // exactly one matches; the others find it revoked below.
        let rotated = refresh_token::Entity::update_many()
            .col_expr(refresh_token::Column::RevokedAt, Expr::value(now))
            .col_expr(refresh_token::Column::ReplacedBy, Expr::value(next_id.clone()))
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .filter(refresh_token::Column::RevokedAt.is_null())
            .filter(refresh_token::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?;
        let Some(current) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&txn)
            .await?
        else {
            txn.rollback().await?;
            return Ok(Rotation::Invalid);
        };
        if rotated.rows_affected == 1 {
            let mut expires_at = expires_at;
            if let Some(ttl) = family_ttl_ms {
                let family_ends = family_started(&txn, &current.family_id).await? + ttl;
                if family_ends <= now {
                    // Past its absolute lifetime: the token stays unspent but useless.
                    txn.rollback().await?;
                    return Ok(Rotation::Invalid);
                }
                expires_at = expires_at.min(family_ends);
            }
            let user_id = UserId::from_trusted(current.user_id.clone());
            let next = new_refresh_token(next_id, &user_id, &current.family_id, next_hash, expires_at)
                .insert(&txn)
                .await?;
            txn.commit().await?;
            return Ok(Rotation::Rotated(next.into()));
        }
        if current.revoked_at.is_none() {
            // Unrevoked but not rotated: it expired.
            txn.rollback().await?;
            return Ok(Rotation::Invalid);
        }
        revoke_family(&txn, &current.family_id, now).await?;
        txn.commit().await?;
        Ok(Rotation::Reused(SignIn {
            user_id: UserId::from_trusted(current.user_id),
            family_id: current.family_id,
        }))
    }

    async fn revoke_refresh_family(&self, token_hash: &str) -> Result<Option<SignIn>, StoreError> {
        let Some(token) = refresh_token::Entity::find()
            .filter(refresh_token::Column::TokenHash.eq(token_hash))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        revoke_family(&self.db, &token.family_id, now_ms()).await?;
        Ok(Some(SignIn {
            user_id: UserId::from_trusted(token.user_id),
            family_id: token.family_id,
        }))
    }

    // === external identities ===

    async fn ensure_external_user(&self, issuer: &str, subject: &str) -> Result<(UserId, bool), StoreError> {
        if let Some(user_id) = find_external_user(&self.db, issuer, subject).await? {
            return Ok((user_id, false));
        }
        let now = now_ms();
        let user_id = new_id();
        let txn = self.db.begin().await?;
        let inserted = async {
            user::ActiveModel {
                id: Set(user_id.clone()),
                username: Set(format!("ext-{}", uuid::Uuid::new_v4().simple())),
                // Not a PHC string: no password ever verifies.
                password_hash: Set(String::new()),
                created_at: Set(now),
                operator: Set(false),
            }
            .insert(&txn)
            .await?;
            external_identity::ActiveModel {
                id: Set(new_id()),
                issuer: Set(issuer.to_owned()),
                subject: Set(subject.to_owned()),
                user_id: Set(user_id.clone()),
                created_at: Set(now),
            }
            .insert(&txn)
            .await
        }
        .await;
        match inserted {
            Ok(_) => {
                txn.commit().await?;
                Ok((UserId::from_trusted(user_id), true))
            }
            Err(e) if StoreError::is_unique_violation(&e) => {
                // A concurrent first sight won the race: use its user.
                txn.rollback().await?;
                find_external_user(&self.db, issuer, subject)
                    .await?
                    .map(|user_id| (user_id, false))
                    .ok_or_else(|| StoreError::Conflict("concurrent external user creation".into()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A live refresh token row `id` in `family_id`.
fn new_refresh_token(
    id: String,
    user_id: &UserId,
    family_id: &str,
    token_hash: &str,
    expires_at: i64,
) -> refresh_token::ActiveModel {
    refresh_token::ActiveModel {
        id: Set(id),
        user_id: Set(user_id.to_string()),
        family_id: Set(family_id.to_owned()),
        token_hash: Set(token_hash.to_owned()),
        expires_at: Set(expires_at),
        created_at: Set(now_ms()),
        revoked_at: Set(None),
        replaced_by: Set(None),
    }
}

async fn find_external_user(
    db: &impl ConnectionTrait,
    issuer: &str,
    subject: &str,
) -> Result<Option<UserId>, StoreError> {
    Ok(external_identity::Entity::find()
        .filter(external_identity::Column::Issuer.eq(issuer))
        .filter(external_identity::Column::Subject.eq(subject))
        .one(db)
        .await?
        .map(|identity| UserId::from_trusted(identity.user_id)))
}

/// When a family started: the creation of its first token.
async fn family_started(db: &impl ConnectionTrait, family_id: &str) -> Result<i64, StoreError> {
    let first = refresh_token::Entity::find()
        .filter(refresh_token::Column::FamilyId.eq(family_id))
        .order_by_asc(refresh_token::Column::CreatedAt)
        .one(db)
        .await?;
    Ok(first.map_or_else(now_ms, |token| token.created_at))
}

/// Revokes the tokens of a family that are not revoked yet.
async fn revoke_family(db: &impl ConnectionTrait, family_id: &str, now: i64) -> Result<(), StoreError> {
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, Expr::value(now))
        .filter(refresh_token::Column::FamilyId.eq(family_id))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

fn is_foreign_key_violation(err: &sea_orm::DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_))
    )
}
