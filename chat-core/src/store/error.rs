//! Storage failures, sorted by what the caller can do about them.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Conflict(String),
    /// The session already has a run and its policy refuses another.
    #[error("session is busy")]
    Busy,
    /// The database cannot be reached; retrying later may succeed.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    #[error("database error")]
    Other(#[source] DbErr),
}

impl StoreError {
    pub fn is_unique_violation(err: &DbErr) -> bool {
        matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
    }
}

impl From<DbErr> for StoreError {
    fn from(err: DbErr) -> Self {
        if is_connectivity(&err) {
            Self::Unavailable(err)
        } else {
            Self::Other(err)
        }
    }
}

fn is_connectivity(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    let runtime = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Exec(e) | DbErr::Query(e) => e,
        _ => return false,
    };
    match runtime {
        RuntimeErr::SqlxError(e) => matches!(
            e.as_ref(),
            Sqlx::Io(_)
                | Sqlx::Tls(_)
                | Sqlx::PoolTimedOut
                | Sqlx::PoolClosed
                | Sqlx::WorkerCrashed
                | Sqlx::Protocol(_)
        ),
        _ => false,
    }
}
