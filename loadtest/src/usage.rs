//! What a side's server process spends, read from Linux's `/proc`: CPU time (all threads,
//! living and exited) and resident memory. `geo-compare --mode stream` divides them by the
//! positions acknowledged and the riders connected, so sides compare by cost as well as by the
//! rate they hold (which, on a machine the harness shares, the harness itself may cap). On
//! other systems, or for a process that cannot be found, the figures are absent, not zero.

use std::time::Duration;

/// A process's CPU time and resident memory at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_bytes: u64,
}

/// The process behind a side, when known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe(Option<u32>);

impl Probe {
    /// A process by id.
    pub fn pid(pid: Option<u32>) -> Self {
        Self(pid)
    }

    /// The process listening on this loopback TCP port, if this system says.
    pub fn listening_on(port: u16) -> Self {
        Self(listening_pid(port))
    }

    /// Its usage now.
    pub fn read(&self) -> Option<Usage> {
        let pid = self.0?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let ticks = cpu_ticks(&stat)?;
        let rss_kb = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()
            .ok()?;
        Some(Usage {
            cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second()),
            rss_bytes: rss_kb * 1024,
        })
    }
}

/// User plus system time of `/proc/<pid>/stat`, in clock ticks (fields 14 and 15, counted
/// after the command name, which may itself hold spaces and parentheses).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|ticks: &f64| *ticks > 0.0)
            // Linux's USER_HZ on every common architecture.
            .unwrap_or(100.0)
    })
}

/// The process holding the listening socket of `port` (IPv4 or IPv6).
fn listening_pid(port: u16) -> Option<u32> {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| listening_inodes(&table, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let fds = std::fs::read_dir(entry.path().join("fd")).ok()?;
            fds.flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .any(|link| wanted.iter().any(|w| link.as_os_str() == w.as_str()))
                .then_some(pid)
        })
}

/// Inodes of the sockets listening on `port` in one `/proc/net/tcp*` table.
fn listening_inodes(table: &str, port: u16) -> Vec<String> {
    const LISTEN: &str = "0A";
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields.get(1)?.rsplit(':').next()?;
            let listening = *fields.get(3)? == LISTEN;
            let ours = u16::from_str_radix(local_port, 16).ok()? == port;
            (listening && ours).then(|| fields.get(9).map(|inode| (*inode).to_owned()))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_counted_after_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 2 3 4 5 6 7 8 9 10 150 25 0 0 20 0 9";
        assert_eq!(cpu_ticks(stat), Some(175));
        assert_eq!(cpu_ticks("garbage"), None);
    }

    #[test]
    fn listening_sockets_are_found_by_port_and_state() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:C350 01 00000000:00000000 00:00000000 00000000     0        0 888 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(table, 8080), vec!["777".to_owned()]);
        assert!(listening_inodes(table, 8081).is_empty());
    }

    #[test]
    fn this_process_is_read() {
        let probe = Probe::pid(Some(std::process::id()));
        if cfg!(target_os = "linux") {
            let usage = probe.read().expect("our own /proc entry");
            assert!(usage.rss_bytes > 0);
        }
        assert_eq!(Probe::pid(None).read(), None);
    }

    #[test]
    fn the_listener_of_a_port_is_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if cfg!(target_os = "linux") {
            assert_eq!(
                Probe::listening_on(port),
                Probe::pid(Some(std::process::id()))
            );
        }
    }
}
