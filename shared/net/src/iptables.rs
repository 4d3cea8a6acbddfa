//! The iptables rules of a network, each tagged with the comment `berth:<bridge>` so that
//! removing the network finds and deletes exactly its rules (and any left by a crash):
//! - `nat POSTROUTING`: masquerade what leaves the subnet through another interface;
//! - `filter FORWARD`: traffic within the bridge passes; from the bridge to any other berth
//!   bridge is dropped (networks are isolated); other outbound traffic and its replies pass.
//!
//! Rules are checked with `-C` and inserted with `-I` (idempotent); `iptables` is run with
//! `-w` (wait for the xtables lock). Whichever backend `iptables` is (nft or legacy) is used.

use crate::error::NetError;
use ipnet::Ipv4Net;
use std::process::Command;

/// Prefix every bridge berth creates has (`berth-` + hash), used by the isolation rule.
pub const BRIDGE_PREFIX: &str = "berth-";

fn comment(bridge: &str) -> String {
    format!("berth:{bridge}")
}

/// `(table, chain, rule)` for a network, in the order they must appear in the chain.
pub fn rules(bridge: &str, subnet: Ipv4Net) -> Vec<(&'static str, &'static str, Vec<String>)> {
    let c = comment(bridge);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let others = format!("{BRIDGE_PREFIX}+");
    vec![
        (
            "filter",
            "FORWARD",
            s(&[
                "-i",
                bridge,
                "-o",
                bridge,
                "-m",
                "comment",
                "--comment",
                &c,
                "-j",
                "ACCEPT",
            ]),
        ),
        (
            "filter",
            "FORWARD",
            s(&[
                "-i",
                bridge,
                "-o",
                &others,
                "-m",
                "comment",
                "--comment",
                &c,
                "-j",
                "DROP",
            ]),
        ),
        (
            "filter",
            "FORWARD",
            s(&[
                "-i",
                bridge,
                "-m",
                "comment",
                "--comment",
                &c,
                "-j",
                "ACCEPT",
            ]),
        ),
        (
            "filter",
            "FORWARD",
            s(&[
                "-o",
                bridge,
                "-m",
                "conntrack",
                "--ctstate",
                "RELATED,ESTABLISHED",
                "-m",
                "comment",
                "--comment",
                &c,
                "-j",
                "ACCEPT",
            ]),
        ),
        (
            "nat",
            "POSTROUTING",
            s(&[
                "-s",
                &subnet.to_string(),
                "!",
                "-o",
                bridge,
                "-m",
                "comment",
                "--comment",
                &c,
                "-j",
                "MASQUERADE",
            ]),
        ),
    ]
}

/// How long one `iptables` call may take, waiting for the xtables lock (`-w`) included.
const IPTABLES_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn run(args: &[String]) -> Result<std::process::Output, NetError> {
    let failed = |reason: String| NetError::Iptables {
        args: args.join(" "),
        reason,
    };
    let mut cmd = Command::new("iptables");
    cmd.arg("-w").args(args);
    match berth_files::run_with_timeout(&mut cmd, b"", IPTABLES_TIMEOUT) {
        Ok(berth_files::Finished::Exited(out)) => Ok(out),
        Ok(berth_files::Finished::TimedOut) => Err(failed(format!(
            "iptables did not finish within {} s (another program holding the xtables lock?)",
            IPTABLES_TIMEOUT.as_secs()
        ))),
        Err(e) => Err(failed(format!("cannot run iptables: {e}"))),
    }
}

fn must(args: Vec<String>) -> Result<(), NetError> {
    let out = run(&args)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Iptables {
            args: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Add the network's rules that are missing, keeping their order at the top of each chain.
pub fn ensure(bridge: &str, subnet: Ipv4Net) -> Result<(), NetError> {
    let rs = rules(bridge, subnet);
    let mut present = Vec::new();
    for (table, chain, rule) in &rs {
        let mut args = vec![
            "-t".into(),
            table.to_string(),
            "-C".into(),
            chain.to_string(),
        ];
        args.extend(rule.iter().cloned());
        present.push(run(&args)?.status.success());
    }
    if present.iter().all(|p| *p) {
        return Ok(());
    }
    // Something is missing: delete what is there and insert all, in order.
    remove(bridge)?;
    let mut pos: std::collections::HashMap<(&str, &str), usize> = Default::default();
    for (table, chain, rule) in rs {
        let n = pos.entry((table, chain)).or_insert(0);
        *n += 1;
        let mut args = vec![
            "-t".into(),
            table.to_string(),
            "-I".into(),
            chain.to_string(),
            n.to_string(),
        ];
        args.extend(rule);
        must(args)?;
    }
    Ok(())
}

/// Delete every rule tagged with the network's comment, in both tables.
pub fn remove(bridge: &str) -> Result<(), NetError> {
    let c = comment(bridge);
    for (table, chain) in [("filter", "FORWARD"), ("nat", "POSTROUTING")] {
        let out = run(&["-t".into(), table.into(), "-S".into(), chain.into()])?;
        if !out.status.success() {
            return Err(NetError::Iptables {
                args: format!("-t {table} -S {chain}"),
                reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let tagged = words
                .windows(2)
                .any(|w| w[0] == "--comment" && w[1].trim_matches('"') == c);
            if !tagged || words.first() != Some(&"-A") {
                continue;
            }
            let mut args = vec!["-t".to_string(), table.to_string(), "-D".to_string()];
            args.extend(words[1..].iter().map(|w| w.trim_matches('"').to_string()));
            must(args)?;
        }
    }
    Ok(())
}

/// Let the host forward packets (needed for the containers' outbound traffic).
pub fn enable_forwarding() -> Result<(), NetError> {
    let p = std::path::Path::new("/proc/sys/net/ipv4/ip_forward");
    if std::fs::read_to_string(p)
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(p, "1").map_err(crate::error::io("enable ip_forward", p))
}
