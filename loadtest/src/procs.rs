//! The service processes a run watches (`--pid name=PID`) and their resident memory.

use std::str::FromStr;

use serde::Serialize;

/// A service process named on the command line: `gateway=1234`, `chat-core=1235`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

impl FromStr for Watched {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (name, pid) = spec
            .split_once('=')
            .ok_or_else(|| format!("`{spec}` is not NAME=PID (e.g. gateway=1234)"))?;
        let name = name.trim();
        if name.is_empty() {
            return Err(format!("`{spec}` has no name before `=`"));
        }
        let pid = pid
            .trim()
            .parse()
            .map_err(|_| format!("`{spec}`: `{pid}` is not a process id"))?;
        Ok(Self {
            name: name.to_owned(),
            pid,
        })
    }
}

impl Watched {
    /// A gateway process: its name starts with `gateway`.
    pub fn is_gateway(&self) -> bool {
        self.name.starts_with("gateway")
    }

    /// A process that holds state for every client socket: a gateway or chat-core.
    pub fn holds_socket_state(&self) -> bool {
        self.is_gateway() || self.name.starts_with("chat-core")
    }

    /// Resident memory now, in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        rss_kib(self.pid).map_err(|err| anyhow::anyhow!("{} (pid {}): {err}", self.name, self.pid))
    }
}

/// Resident memory of `pid` in KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|err| anyhow::anyhow!("cannot read /proc/{pid}/status: {err}"))?;
    parse_vm_rss(&status).ok_or_else(|| anyhow::anyhow!("no VmRSS line in /proc/{pid}/status"))
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The soft limit on open files of this process (`Max open files` in `/proc/self/limits`).
pub fn open_files_limit() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

/// RSS of every watched process at one moment.
#[derive(Clone, Debug, Serialize)]
pub struct RssSample {
    /// Seconds since the mode started.
    pub at_s: f64,
    /// KiB per process name; a process that is gone is left out.
    pub rss_kib: std::collections::BTreeMap<String, u64>,
}

/// Samples every watched process; processes that cannot be read are left out.
pub fn sample(watched: &[Watched], at_s: f64) -> RssSample {
    RssSample {
        at_s: (at_s * 10.0).round() / 10.0,
        rss_kib: watched
            .iter()
            .filter_map(|w| w.rss_kib().ok().map(|kib| (w.name.clone(), kib)))
            .collect(),
    }
}

/// Before and after a mode, per process.
#[derive(Clone, Debug, Serialize)]
pub struct RssChange {
    pub name: String,
    pub pid: u32,
    pub before_kib: u64,
    pub after_kib: u64,
    pub growth_kib: i64,
}

/// Reads every watched process, failing on the first that cannot be read.
pub fn read_all(watched: &[Watched]) -> anyhow::Result<Vec<u64>> {
    watched.iter().map(Watched::rss_kib).collect()
}

pub fn changes(watched: &[Watched], before: &[u64], after: &[u64]) -> Vec<RssChange> {
    watched
        .iter()
        .zip(before.iter().zip(after))
        .map(|(w, (&before_kib, &after_kib))| RssChange {
            name: w.name.clone(),
            pid: w.pid,
            before_kib,
            after_kib,
            growth_kib: after_kib as i64 - before_kib as i64,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_specs_name_a_process() {
        let spec: Watched = "gateway-2=41".parse().expect("valid");
        assert_eq!(
            (spec.name.as_str(), spec.pid, spec.is_gateway()),
            ("gateway-2", 41, true)
        );
        assert!(
            "chat-core=7"
                .parse::<Watched>()
                .is_ok_and(|w| w.holds_socket_state())
        );
        assert!(
            "worker=8"
                .parse::<Watched>()
                .is_ok_and(|w| !w.holds_socket_state())
        );
        assert!("1234".parse::<Watched>().is_err());
        assert!("=1234".parse::<Watched>().is_err());
        assert!("gateway=abc".parse::<Watched>().is_err());
    }

    #[test]
    fn rss_comes_from_the_status_file() {
        assert_eq!(
            parse_vm_rss("Name:\tx\nVmRSS:\t   12345 kB\nVmData: 1 kB\n"),
            Some(12345)
        );
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert!(rss_kib(std::process::id()).is_ok_and(|kib| kib > 0));
        assert!(open_files_limit().is_some_and(|n| n > 0));
    }
}
