use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "messages")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub session_id: String,
    pub seq: i64,
    pub role: String,
    pub agent: Option<String>,
    pub content: String,
    pub client_msg_id: Option<String>,
    pub run_id: Option<String>,
    pub created_at: i64,
    pub first_delta_ms: Option<i64>,
    pub duration_ms: Option<i64>,
    /// JSON array of `{call_id, name, arguments, result}` for replies that used tools.
    pub tool_calls: Option<String>,
    /// The JSON object the sender attached, as text.
    pub metadata: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
