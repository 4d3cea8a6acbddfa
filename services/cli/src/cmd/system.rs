//! `berth system info`: every service's name, version, node and uptime, asked over the bus.

use crate::ctx::{exit, Ctx};
use crate::output;
use berth_bus::RequestOptions;
use berth_proto::info::ServiceInfo;
use berth_proto::Service;
use serde::Serialize;
use std::time::Duration;

#[derive(clap::Subcommand)]
pub enum SystemCmd {
    /// Ask every service for its name, version, node and uptime.
    Info,
    /// Disk space used by images, snapshots and containers' writable layers.
    Df,
}

#[derive(Serialize)]
struct Row {
    service: String,
    node: String,
    status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<ServiceInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub async fn run(ctx: &Ctx, cmd: SystemCmd) -> anyhow::Result<()> {
    match cmd {
        SystemCmd::Info => info(ctx).await,
        SystemCmd::Df => df(ctx).await,
    }
}

async fn info(ctx: &Ctx) -> anyhow::Result<()> {
    let node = ctx.node()?;
    let bus = ctx.bus().await?;
    let opts = RequestOptions::timeout(Duration::from_secs(ctx.global.timeout.min(5)));
    let asks = Service::ALL.into_iter().map(|svc| {
        let (bus, node, opts) = (bus.clone(), node.clone(), opts.clone());
        async move {
            let r: Result<ServiceInfo, _> = bus
                .request(
                    &node,
                    svc,
                    berth_proto::info::VERB,
                    &serde_json::json!({}),
                    &opts,
                )
                .await;
            (svc, r)
        }
    });
    let rows: Vec<Row> = futures::future::join_all(asks)
        .await
        .into_iter()
        .map(|(svc, r)| match r {
            Ok(i) => Row {
                service: svc.name().into(),
                node: i.node.clone(),
                status: "running".into(),
                info: Some(i),
                error: None,
            },
            Err(e) => Row {
                service: svc.name().into(),
                node: svc.node_token(&node).into(),
                status: "not running".into(),
                info: None,
                error: Some(e.to_string()),
            },
        })
        .collect();
    let missing = rows.iter().filter(|r| r.info.is_none()).count();
    if ctx.json() {
        output::print_json(&serde_json::json!({"bus": bus.url(), "node": node, "services": rows}))?;
    } else {
        println!("bus:  {}", bus.url());
        println!("node: {node}");
        println!();
        let mut t = output::table(&["SERVICE", "NODE", "VERSION", "STATUS", "UPTIME"]);
        for r in &rows {
            let (version, uptime) = match &r.info {
                Some(i) => (i.version.clone(), output::human_duration(i.uptime_secs)),
                None => ("-".into(), "-".into()),
            };
            t.add_row(vec![
                r.service.clone(),
                r.node.clone(),
                version,
                r.status.clone(),
                uptime,
            ]);
        }
        output::print_table(&t);
    }
    if missing > 0 {
        eprintln!("berth: {missing} of {} services did not answer", rows.len());
        return Err(exit(1));
    }
    Ok(())
}

async fn df(ctx: &Ctx) -> anyhow::Result<()> {
    use berth_proto::layer_store::{DfReply, DfRequest};
    let r: DfReply = ctx
        .call::<berth_proto::layer_store::verbs::Df>(&DfRequest {})
        .await?;
    if ctx.json() {
        return output::print_json(&r);
    }
    let mut t = output::table(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
    for (name, u) in [
        ("Images", &r.images),
        ("Snapshots", &r.snapshots),
        ("Containers", &r.containers),
    ] {
        t.add_row(vec![
            name.to_string(),
            u.count.to_string(),
            u.active.to_string(),
            output::human_size(u.size),
            output::human_size(u.reclaimable),
        ]);
    }
    output::print_table(&t);
    Ok(())
}
