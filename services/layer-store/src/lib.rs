//! The layer-store service of berth: layers unpacked once per chain ID into snapshots (safely:
//! a layer is hostile input), root filesystems of containers as overlay descriptions, images
//! listed, inspected, removed, loaded and saved, and garbage collection. See
//! docs/layer-store.md.

pub mod archive;
pub mod core;
pub mod error;
pub use berth_store::lease;
pub mod unpack;

use crate::core::LayerStore;
use berth_bus::{attrs, serve, Bus, Router, ServiceContext};
use berth_proto::layer_store::*;
use berth_proto::{BerthError, Service};
use std::sync::Arc;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> error::Result<T> + Send + 'static,
) -> Result<T, BerthError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BerthError::internal(format!("layer-store task: {e}")))?
        .map_err(BerthError::from)
}

async fn emit_unpacked(bus: &Bus, image: &str, made: &[core::Unpacked]) {
    for u in made {
        let m = &u.meta;
        bus.emit(
            "image",
            EVENT_UNPACKED,
            image,
            attrs! {
                "layer" => m.layer.clone(),
                "chain_id" => m.chain_id.clone(),
                "bytes" => m.uncompressed,
                "entries" => m.entries,
                "seconds" => m.seconds,
            },
        )
        .await;
    }
}

/// Serve the layer-store's verbs until `ctx.shutdown` is cancelled.
pub async fn run(ctx: ServiceContext) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let ls = Arc::new(LayerStore::open(&ctx.config.data_root)?);
    let router = Router::new();
    let (l, b) = (ls.clone(), ctx.bus.clone());
    let router = router.verb::<berth_proto::layer_store::verbs::Prepare, _, _>(
        move |req: PrepareRequest| {
            let (ls, bus) = (l.clone(), b.clone());
            async move {
                let r = req.clone();
                let (reply, made) = blocking(move || ls.prepare(&r)).await?;
                emit_unpacked(&bus, &req.image, &made).await;
                bus.emit(
                    "snapshot",
                    EVENT_PREPARED,
                    &req.container_id,
                    attrs! {
                        "image" => req.image.clone(),
                        "digest" => reply.image_digest.clone(),
                        "layers" => reply.rootfs.lowerdirs.len(),
                    },
                )
                .await;
                Ok::<_, BerthError>(reply)
            }
        },
    );
    let l = ls.clone();
    let router = router.verb::<berth_proto::layer_store::verbs::Release, _, _>(
        move |req: ReleaseRequest| {
            let ls = l.clone();
            async move {
                blocking(move || ls.release(&req.container_id)).await?;
                Ok::<_, BerthError>(berth_proto::Empty {})
            }
        },
    );
    let l = ls.clone();
    let router =
        router.verb::<berth_proto::layer_store::verbs::Images, _, _>(move |_: ImagesRequest| {
            let ls = l.clone();
            async move { blocking(move || ls.images()).await }
        });
    let l = ls.clone();
    let router = router.verb::<berth_proto::layer_store::verbs::Inspect, _, _>(
        move |req: InspectRequest| {
            let ls = l.clone();
            async move { blocking(move || ls.inspect(&req.image)).await }
        },
    );
    let (l, b) = (ls.clone(), ctx.bus.clone());
    let router =
        router.verb::<berth_proto::layer_store::verbs::Remove, _, _>(move |req: RemoveRequest| {
            let (ls, bus) = (l.clone(), b.clone());
            async move {
                let r = req.clone();
                let reply = blocking(move || ls.remove(&r)).await?;
                bus.emit(
                    "image",
                    EVENT_REMOVED,
                    &req.image,
                    attrs! {
                        "untagged" => reply.untagged.clone(),
                        "deleted" => reply.deleted.len(),
                        "space_freed" => reply.space_freed,
                    },
                )
                .await;
                Ok::<_, BerthError>(reply)
            }
        });
    let (l, b) = (ls.clone(), ctx.bus.clone());
    let router = router.verb::<berth_proto::layer_store::verbs::Gc, _, _>(move |req: GcRequest| {
        let (ls, bus) = (l.clone(), b.clone());
        async move {
            let reply = blocking(move || ls.gc(&req)).await?;
            for r in &reply.untagged {
                bus.emit("image", EVENT_REMOVED, r, attrs! {"by" => "prune"})
                    .await;
            }
            Ok::<_, BerthError>(reply)
        }
    });
    let l = ls.clone();
    let router = router.verb::<berth_proto::layer_store::verbs::Df, _, _>(move |_: DfRequest| {
        let ls = l.clone();
        async move { blocking(move || ls.df()).await }
    });
    let (l, b) = (ls.clone(), ctx.bus.clone());
    let router =
        router.verb::<berth_proto::layer_store::verbs::Load, _, _>(move |req: LoadRequest| {
            let (ls, bus) = (l.clone(), b.clone());
            async move {
                let reply = blocking(move || archive::load(&ls, &req)).await?;
                for i in &reply.images {
                    bus.emit(
                        "image",
                        EVENT_LOADED,
                        &i.reference,
                        attrs! {"digest" => i.digest.clone(), "format" => reply.format.clone()},
                    )
                    .await;
                }
                Ok::<_, BerthError>(reply)
            }
        });
    let l = ls.clone();
    let router =
        router.verb::<berth_proto::layer_store::verbs::Save, _, _>(move |req: SaveRequest| {
            let ls = l.clone();
            async move { blocking(move || archive::save(&ls, &req)).await }
        });
    serve(&ctx, Service::LayerStore, router).await?;
    Ok(())
}
