//! chat-core's sea-orm entities (`chat-core/src/store/entity/`) are generated
//! from the migrated Postgres schema, as `sea-orm-cli generate entity` would
//! generate them: this test migrates a fresh database, generates the entities
//! again, formats them with rustfmt, and fails when a file differs or is
//! missing. `REGENERATE_ENTITIES=1` writes them instead.
//!
//! Postgres is the schema of record: SQLite reports every integer column as
//! 64-bit, where Postgres keeps `runs.attempt` a 32-bit `INTEGER`. Needs
//! `TEST_DATABASE_URL` (skipped without it).

use std::collections::BTreeMap;
use std::path::PathBuf;

use chat_testkit::TestDatabase;
use migration::MigratorTrait;
use sea_orm_codegen::{EntityTransformer, EntityWriterContext};
use sea_schema::postgres::discovery::SchemaDiscovery;

/// The table sea-orm-migration keeps its own bookkeeping in.
const MIGRATIONS_TABLE: &str = "seaql_migrations";

/// Set to write the generated files instead of comparing them.
const REGENERATE: &str = "REGENERATE_ENTITIES";

fn entity_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../chat-core/src/store/entity")
}

/// Each generated file by name, from the schema `url` migrates to.
async fn generate(url: &str) -> BTreeMap<String, String> {
    let db = sea_orm::Database::connect(url).await.unwrap();
    migration::Migrator::up(&db, None).await.unwrap();
    let schema = SchemaDiscovery::new(db.get_postgres_connection_pool().clone(), "public")
        .discover()
        .await
        .unwrap();
    let tables = schema
        .tables
        .into_iter()
        .filter(|table| table.info.name != MIGRATIONS_TABLE)
        .map(|mut table| {
            // What sea-orm-cli leaves out too: codegen has no form for them.
            table.unique_constraints.retain(|unique| !unique.is_partial);
            table.write()
        })
        .collect();
    // sea-orm-cli's defaults: compact format, a prelude, no serde.
    let context = EntityWriterContext::new(
        Default::default(),
        Default::default(),
        Default::default(),
        false,
        Default::default(),
        Default::default(),
        None,
        false,
        false,
        false,
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        Vec::new(),
        false,
        true,
        Default::default(),
    );
    let output = EntityTransformer::transform(tables).unwrap().generate(&context);
    db.close().await.unwrap();
    output
        .files
        .into_iter()
        .map(|file| (file.name, file.content))
        .collect()
}

/// `source` as `cargo fmt` leaves it (the workspace's `rustfmt.toml`
/// applies), as sea-orm-cli formats what it writes; `None` without rustfmt.
fn formatted(name: &str, source: &str) -> Option<String> {
    let mut rustfmt = std::process::Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout"])
        .current_dir(entity_dir())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    std::io::Write::write_all(&mut rustfmt.stdin.take().unwrap(), source.as_bytes()).unwrap();
    let output = rustfmt.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("is not installed") {
        // rustup's proxy without the rustfmt component.
        return None;
    }
    assert!(
        output.status.success(),
        "rustfmt failed on the generated {name}: {stderr}"
    );
    Some(String::from_utf8(output.stdout).unwrap())
}

#[tokio::test]
async fn the_entities_are_what_the_migrated_schema_generates() {
    if chat_testkit::needs::postgres().is_none() {
        return;
    }
    let database = TestDatabase::new().await.unwrap();
    let generated = generate(&database.url).await;
    assert!(
        generated.contains_key("runs.rs"),
        "no entity for runs: {:?}",
        generated.keys()
    );
    let dir = entity_dir();
    let mut formatted_files = BTreeMap::new();
    for (name, content) in &generated {
        let Some(content) = formatted(name, content) else {
            chat_testkit::needs::missing::<()>("rustfmt is not installed (rustup component add rustfmt)");
            return;
        };
        formatted_files.insert(name.clone(), content);
    }
    if std::env::var(REGENERATE).is_ok_and(|v| !v.is_empty() && v != "0") {
        for (name, content) in &formatted_files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        return;
    }
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    assert_eq!(
        on_disk,
        formatted_files.keys().cloned().collect::<Vec<_>>(),
        "{} holds other files than the schema generates; {REGENERATE}=1 writes them",
        dir.display()
    );
    for (name, content) in &formatted_files {
        let written = std::fs::read_to_string(dir.join(name)).unwrap();
        let differs = written.lines().zip(content.lines()).position(|(a, b)| a != b);
        assert!(
            written == *content,
            "{name} is not what the migrated schema generates (from line {}: {:?}); {REGENERATE}=1 writes it",
            differs.unwrap_or_else(|| written.lines().count().min(content.lines().count())) + 1,
            differs
                .and_then(|i| content.lines().nth(i))
                .unwrap_or("(a missing or extra line)"),
        );
    }
}
