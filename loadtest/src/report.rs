//! `report`: renders the results of one `bench/run` (a folder of JSON files) as the Markdown
//! section it writes into BENCHMARKS.md: each figure beside its target, met or not.
//!
//! The folder holds `meta.json` (machine, commit, command, written by bench/run),
//! `pgbench.json`, and one file per mode run: `turns-c<N>.json`, `embedded-turns-c<N>.json`
//! (the all-in-one's), `deltas.json`,
//! `fanout.json`, `reconnect.json`, `soak.json`, `idle.json`, and `settle`'s RSS at the start
//! and after the load (`rss-start.json`, `rss-after-load.json`). Missing files are reported as
//! not measured.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The folder bench/run wrote its JSON results into.
    pub dir: PathBuf,

    /// Fail (exit 1) when any mode counted errors or saw a delta go missing.
    #[arg(long)]
    pub strict: bool,
}

/// The problems `--strict` refuses: each mode result with errors or undelivered deltas.
pub fn problems(dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut problems = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if !name.ends_with(".json") || name == "meta.json" || name == "pgbench.json" {
            continue;
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let document: Value = serde_json::from_str(&text).with_context(|| format!("{name} is not JSON"))?;
        let result = &document["result"];
        if result["errors_total"].as_u64().unwrap_or(0) > 0 {
            problems.push(format!("{name}: errors {}", result["errors"]));
        }
        if result["every_delta_delivered"] == false {
            problems.push(format!("{name}: not every delta was delivered"));
        }
    }
    Ok(problems)
}

/// Renders the section; `dir` as in [`Args`].
pub fn render(dir: &Path) -> anyhow::Result<String> {
    let read = |name: &str| -> anyhow::Result<Option<Value>> {
        let path = dir.join(name);
        if !path.exists() {
            return Ok(None);
        }
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let value: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
        Ok(Some(value.get("result").cloned().unwrap_or(value)))
    };
    let meta = read("meta.json")?.context("meta.json is missing: bench/run writes it")?;
    let pgbench = read("pgbench.json")?;
    // `turns` runs by concurrency: those against the separate services, then the all-in-one's.
    let mut turns: Vec<(u64, Value)> = Vec::new();
    let mut embedded: Vec<(u64, Value)> = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let (runs, rest) = match name.strip_prefix("embedded-") {
            Some(rest) => (&mut embedded, rest),
            None => (&mut turns, name.as_str()),
        };
        if let Some(c) = rest.strip_prefix("turns-c").and_then(|n| n.strip_suffix(".json"))
            && let Ok(c) = c.parse()
            && let Some(result) = read(&name)?
        {
            runs.push((c, result));
        }
    }
    turns.sort_by_key(|(c, _)| *c);
    embedded.sort_by_key(|(c, _)| *c);
    let ceiling = pgbench.as_ref().and_then(|p| p["tps"].as_f64());

    let mut out = String::new();
    let s = |v: &Value| v.as_str().unwrap_or("?").to_owned();
    let _ = writeln!(
        out,
        "## Latest run of `bench/run`: {}, commit `{}`\n",
        s(&meta["date"]),
        s(&meta["commit"])
    );
    let _ = writeln!(
        out,
        "Machine: {} cores ({}), {} RAM, Linux {}. {} gateway process(es), chat-core and agent-worker as \
         separate processes ({} build) on Postgres + Redis, `echo` agent, loopback; the harness runs on \
         the same cores. Command: `{}`.\n",
        s(&meta["nproc"]),
        s(&meta["cpu"]),
        s(&meta["ram"]),
        s(&meta["kernel"]),
        s(&meta["gateways"]),
        s(&meta["profile"]),
        s(&meta["command"]),
    );
    out.push_str("| measure | measured | target | status |\n|---|---|---|---|\n");
    let mut row = |measure: String, measured: String, target: &str, status: Status| {
        let _ = writeln!(out, "| {measure} | {measured} | {target} | {} |", status.text());
    };

    match &pgbench {
        Some(p) => row(
            format!("pgbench, a turn's three commits, c={}", p["clients"]),
            format!(
                "**{} turns/s** (latency avg {} ms)",
                num(&p["tps"], 0),
                num(&p["latency_avg_ms"], 2)
            ),
            "the ceiling",
            Status::Info,
        ),
        None => row(
            "pgbench ceiling".into(),
            "not measured".into(),
            "the ceiling",
            Status::Missing,
        ),
    }
    let tagged = turns.iter().map(|(c, t)| (c, t, "")).chain(
        embedded
            .iter()
            .map(|(c, t)| (c, t, ", all-in-one on SQLite + in-process bus")),
    );
    for (c, t, setup) in tagged {
        let reply = &t["latency"]["send_to_reply"];
        let ratio = ceiling
            .filter(|_| setup.is_empty())
            .and_then(|ceil| t["turns_per_s"].as_f64().map(|tps| tps / ceil * 100.0));
        let measured = format!(
            "**{} turns/s**; send → ack p50 {} ms, → first delta p50 {} ms, → stored reply p50 {} / p99 {} / max {} ms{}{}",
            num(&t["turns_per_s"], 0),
            num(&t["latency"]["send_to_ack"]["p50_ms"], 2),
            num(&t["latency"]["send_to_first_delta"]["p50_ms"], 2),
            num(&reply["p50_ms"], 2),
            num(&reply["p99_ms"], 2),
            num(&reply["max_ms"], 1),
            ratio
                .filter(|_| *c > 1)
                .map(|r| format!("; **{r:.0}%** of pgbench"))
                .unwrap_or_default(),
            errors_note(t),
        );
        if *c == 1 {
            let ok = reply["p50_ms"].as_f64().is_some_and(|p| p <= 2.0)
                && reply["p99_ms"].as_f64().is_some_and(|p| p <= 5.0);
            row(
                format!("one turn on an idle system (c=1{setup})"),
                measured,
                "≤ 2 ms p50, ≤ 5 ms p99 send → stored reply",
                Status::of(ok, t),
            );
        } else if setup.is_empty() {
            let ok = ratio.is_some_and(|r| r >= 50.0);
            row(
                format!("turns at c={c}"),
                measured,
                "≥ 50% of pgbench turns/s",
                Status::of(ok, t),
            );
        } else {
            row(format!("turns at c={c}{setup}"), measured, "–", Status::Info);
        }
    }
    if turns.is_empty() {
        row("turns".into(), "not measured".into(), "", Status::Missing);
    }

    match read("soak.json")? {
        Some(soak) => {
            let reply = &soak["latency"]["send_to_reply"];
            let before_load = |name: &Value| &soak["rss_series"][0]["rss_kib"][name.as_str().unwrap_or("")];
            let flat: Vec<String> = soak["flatness"]
                .as_array()
                .map(|all| {
                    all.iter()
                        .map(|f| {
                            format!(
                                "{} {} → {} KiB ({}%; {} at the soak's start)",
                                s(&f["name"]),
                                num(&f["first_kib"], 0),
                                num(&f["last_kib"], 0),
                                num(&f["growth_pct"], 1),
                                num(before_load(&f["name"]), 0)
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let rate_pct = ceiling.and_then(|ceil| soak["target_rate"].as_f64().map(|r| r / ceil * 100.0));
            let ok_latency = reply["p99_ms"].as_f64().is_some_and(|p| p <= 10.0);
            row(
                format!(
                    "steady load: {} turns/s asked{} for {} s (soak)",
                    num(&soak["target_rate"], 0),
                    rate_pct
                        .map(|r| format!(" ({r:.0}% of pgbench)"))
                        .unwrap_or_default(),
                    num(&soak["seconds"], 0)
                ),
                format!(
                    "{} turns/s done; send → stored reply p50 {} / p99 {} ms{}",
                    num(&soak["turns_per_s"], 0),
                    num(&reply["p50_ms"], 2),
                    num(&reply["p99_ms"], 2),
                    errors_note(&soak)
                ),
                "p99 ≤ 10 ms at half of 50% of pgbench",
                Status::of(ok_latency, &soak),
            );
            row(
                "RSS over the soak (first samples after warm-up → last)".into(),
                flat.join("; "),
                "flat",
                Status::of(soak["rss_flat"] == true, &Value::Null),
            );
        }
        None => row("soak".into(), "not measured".into(), "", Status::Missing),
    }

    match (read("rss-start.json")?, read("rss-after-load.json")?) {
        (Some(start), Some(after)) => {
            let (measured, core_after) = rss_after_load(&start, &after);
            row(
                format!(
                    "RSS at the start → after every load mode and {} s without load",
                    num(&after["settle_secs"], 0)
                ),
                measured,
                "chat-core ≤ 40 MB, back near its start",
                match core_after {
                    Some(kib) => Status::of(kib * 1024 <= CORE_AFTER_LOAD_BYTES, &Value::Null),
                    None => Status::Missing,
                },
            );
        }
        _ => row(
            "RSS after load".into(),
            "not measured".into(),
            "chat-core ≤ 40 MB, back near its start",
            Status::Missing,
        ),
    }

    match read("deltas.json")? {
        Some(d) => {
            let ok = d["deltas_per_s"].as_f64().is_some_and(|r| r >= 200_000.0)
                && d["every_delta_delivered"] == true;
            row(
                format!(
                    "streamed deltas, {} sessions × {}-word replies",
                    d["sessions"], d["words"]
                ),
                format!(
                    "**{} deltas/s**; every delta delivered: {} ({} of {} replies incomplete){}",
                    num(&d["deltas_per_s"], 0),
                    yes_no(&d["every_delta_delivered"]),
                    d["incomplete_replies"],
                    d["replies"],
                    errors_note(&d)
                ),
                "≥ 200,000/s, every delta delivered",
                Status::of(ok, &d),
            );
        }
        None => row(
            "streamed deltas".into(),
            "not measured".into(),
            "",
            Status::Missing,
        ),
    }

    match read("fanout.json")? {
        Some(f) => row(
            format!(
                "fan-out: one session, {} subscribers, {} turns of {} words",
                f["subscribers"], f["turns"], f["words"]
            ),
            format!(
                "{} deltas/s delivered; send → delta p50 {} / p99 {} ms; every delta delivered: {}{}",
                num(&f["deltas_per_s"], 0),
                num(&f["delivery_latency"]["p50_ms"], 2),
                num(&f["delivery_latency"]["p99_ms"], 2),
                yes_no(&f["every_delta_delivered"]),
                errors_note(&f)
            ),
            "–",
            Status::of(f["every_delta_delivered"] == true, &f),
        ),
        None => row("fan-out".into(), "not measured".into(), "", Status::Missing),
    }

    match read("reconnect.json")? {
        Some(r) => row(
            format!("reconnect storm, {} loops", r["concurrency"]),
            format!(
                "{} connections/s (connect + authenticate + subscribe); p50 {} / p99 {} ms{}",
                num(&r["connections_per_s"], 0),
                num(&r["latency"]["connect_to_subscribed"]["p50_ms"], 2),
                num(&r["latency"]["connect_to_subscribed"]["p99_ms"], 2),
                errors_note(&r)
            ),
            "–",
            Status::of(true, &r),
        ),
        None => row(
            "reconnect storm".into(),
            "not measured".into(),
            "",
            Status::Missing,
        ),
    }

    let idle = read("idle.json")?;
    match &idle {
        Some(i) => {
            let per = i["gateway_plus_core_kib_per_socket"].as_f64();
            let gateways = i["gateways"].as_u64().unwrap_or(1);
            row(
                format!(
                    "idle WebSocket, {} held ({} per gateway process)",
                    i["opened"],
                    num(&i["sockets_per_gateway"], 0)
                ),
                format!(
                    "**{} KiB** each, gateway + chat-core ({}){}",
                    per.map_or("?".into(), |p| format!("{p:.1}")),
                    idle_parts(i),
                    errors_note(i)
                ),
                "≤ 8 KiB",
                Status::of(per.is_some_and(|p| p <= 8.0), i),
            );
            let held = i["opened"].as_u64().unwrap_or(0);
            row(
                format!("idle WebSockets held at once, {gateways} gateway process(es)"),
                format!("{held} (closed while idle: {})", i["closed_while_idle"]),
                "≥ 100,000",
                Status::of(held >= 100_000, i),
            );
        }
        None => row(
            "idle WebSockets".into(),
            "not measured".into(),
            "≤ 8 KiB, ≥ 100,000",
            Status::Missing,
        ),
    }
    out.push_str(
        "\nEvery mode's JSON (all percentiles, error kinds, the soak's RSS series) stays in the run's \
         output folder (`BENCH_OUT`); `loadtest report` renders this section from it.\n",
    );
    Ok(out)
}

/// KiB per socket of each process; the gateways' per socket each holds, as one range.
fn idle_parts(idle: &Value) -> String {
    let Some(all) = idle["rss"].as_array() else {
        return String::new();
    };
    let mut parts: Vec<String> = all
        .iter()
        .filter(|p| p.get("kib_per_own_socket").is_none())
        .map(|p| {
            format!(
                "{} {:.1} KiB",
                p["name"].as_str().unwrap_or("?"),
                p["kib_per_socket"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    let gateways: Vec<f64> = all
        .iter()
        .filter_map(|p| p["kib_per_own_socket"].as_f64())
        .collect();
    let (low, high) = gateways
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    match gateways.len() {
        0 => {}
        1 => parts.push(format!("the gateway {low:.1} KiB per socket it holds")),
        n if high - low < 0.05 => {
            parts.push(format!("each of {n} gateways {low:.1} KiB per socket it holds"))
        }
        n => parts.push(format!(
            "each of {n} gateways {low:.1}–{high:.1} KiB per socket it holds"
        )),
    }
    parts.join(", ")
}

/// A number with `decimals` digits and thousands separators, `?` when absent.
fn num(value: &Value, decimals: usize) -> String {
    let Some(v) = value.as_f64() else {
        return "?".into();
    };
    let text = format!("{v:.decimals$}");
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{sign}{grouped}.{f}"),
        None => format!("{sign}{grouped}"),
    }
}

fn yes_no(value: &Value) -> &'static str {
    if value == &Value::Bool(true) {
        "yes"
    } else {
        "**no**"
    }
}

fn errors_note(result: &Value) -> String {
    match result["errors_total"].as_u64() {
        Some(0) | None => String::new(),
        Some(n) => format!("; **{n} errors** {}", result["errors"]),
    }
}

/// chat-core's resident memory allowed once the load is over.
const CORE_AFTER_LOAD_BYTES: u64 = 40_000_000;

/// Each process's RSS at the start and after the load, and chat-core's after the load in KiB.
fn rss_after_load(start: &Value, after: &Value) -> (String, Option<u64>) {
    let Some(processes) = after["rss_kib"].as_object() else {
        return ("?".into(), None);
    };
    let text = processes
        .iter()
        .map(|(name, kib)| {
            format!(
                "{name} {} → {} KiB",
                num(&start["rss_kib"][name.as_str()], 0),
                num(kib, 0)
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    (text, after["rss_kib"]["chat-core"].as_u64())
}

#[derive(Clone, Copy)]
enum Status {
    Met,
    NotMet,
    Info,
    Missing,
}

impl Status {
    /// Met when `ok` and the result counted no errors.
    fn of(ok: bool, result: &Value) -> Self {
        if ok && result["errors_total"].as_u64().unwrap_or(0) == 0 {
            Self::Met
        } else {
            Self::NotMet
        }
    }

    fn text(self) -> &'static str {
        match self {
            Self::Met => "met",
            Self::NotMet => "**not met**",
            Self::Info => "–",
            Self::Missing => "not measured",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A scratch run folder for one test, removed when dropped.
    struct RunFolder(PathBuf);

    impl RunFolder {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("loadtest-{name}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("dir");
            Self(dir)
        }

        /// Writes `value` as the JSON file `name`.
        fn write(&self, name: &str, value: Value) {
            std::fs::write(self.0.join(name), value.to_string()).expect("write");
        }
    }

    impl Drop for RunFolder {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn numbers_get_separators() {
        assert_eq!(num(&json!(1234567.891), 1), "1,234,567.9");
        assert_eq!(num(&json!(-1234), 0), "-1,234");
        assert_eq!(num(&json!(12), 2), "12.00");
        assert_eq!(num(&Value::Null, 2), "?");
    }

    #[test]
    fn strict_checks_refuse_errors_and_lost_deltas() {
        let dir = RunFolder::new("strict");
        dir.write("meta.json", json!({"date": "2026-11-29"}));
        dir.write("turns-c1.json", json!({"result": {"errors_total": 0}}));
        assert!(problems(&dir.0).expect("problems").is_empty());
        dir.write(
            "reconnect.json",
            json!({"result": {"errors_total": 2, "errors": {"upgrade_429": 2}}}),
        );
        dir.write(
            "deltas.json",
            json!({"result": {"errors_total": 0, "every_delta_delivered": false}}),
        );
        let found = problems(&dir.0).expect("problems");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().any(|p| p.contains("upgrade_429")), "{found:?}");
    }

    #[test]
    fn a_run_folder_renders_with_targets() {
        let dir = RunFolder::new("report");
        dir.write(
            "meta.json",
            json!({"date": "2026-11-29", "commit": "abc", "nproc": "2", "command": "bench/run"}),
        );
        dir.write(
            "pgbench.json",
            json!({"clients": 16, "tps": 2000.0, "latency_avg_ms": 8.0}),
        );
        dir.write(
            "turns-c16.json",
            json!({"mode": "turns", "result": {"turns_per_s": 1200.0, "errors_total": 0, "latency": {"send_to_reply": {"p50_ms": 3.0, "p99_ms": 9.0}}}}),
        );
        dir.write(
            "embedded-turns-c1.json",
            json!({"mode": "turns", "result": {"turns_per_s": 600.0, "errors_total": 0, "latency": {"send_to_reply": {"p50_ms": 1.5, "p99_ms": 4.0}}}}),
        );
        dir.write(
            "rss-start.json",
            json!({"mode": "settle", "result": {"settle_secs": 0.0, "rss_kib": {"chat-core": 20000, "gateway-0": 12000}}}),
        );
        dir.write(
            "rss-after-load.json",
            json!({"mode": "settle", "result": {"settle_secs": 30.0, "rss_kib": {"chat-core": 41000, "gateway-0": 13000}}}),
        );
        let text = render(&dir.0).expect("render");
        assert!(
            text.contains(
                "| RSS at the start → after every load mode and 30 s without load | chat-core 20,000 → 41,000 KiB; \
                 gateway-0 12,000 → 13,000 KiB | chat-core ≤ 40 MB, back near its start | **not met** |"
            ),
            "{text}"
        );
        assert!(text.contains("**60%** of pgbench"), "{text}");
        assert!(text.contains("| turns at c=16 |"), "{text}");
        assert!(
            text.contains(
                "| one turn on an idle system (c=1, all-in-one on SQLite + in-process bus) | **600 turns/s**"
            ),
            "{text}"
        );
        assert!(
            text.contains("→ stored reply p50 1.50 / p99 4.00 / max ? ms | ≤ 2 ms p50, ≤ 5 ms p99 send → stored reply | met |"),
            "{text}"
        );
        assert!(text.contains("| idle WebSockets | not measured |"), "{text}");
    }
}
