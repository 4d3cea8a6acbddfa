//! Creating a container: its name reserved, the image pulled and prepared, the record and the isolator's create, and a failed create undone so it leaves nothing.

use super::*;

impl Supervisor {
    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<ContainerState> {
        // Everything that can be checked before pulling or preparing anything (the same checks
        // `berth plan` and `apply` run on a spec; berth_proto::validate). Among them, as
        // Docker refuses it: a container removed at its exit is never restarted (and its
        // volatile root filesystem could not be mounted again).
        berth_proto::validate::create_request(&req)
            .map_err(|e| SupervisorError::invalid(e.field, e.reason))?;
        let id = match &req.id {
            None => berth_bus::random_hex(64),
            Some(id) => {
                if !is_container_id(id) {
                    return Err(SupervisorError::invalid(
                        "id",
                        format!("{id:?} is not 64 lowercase hexadecimal digits"),
                    ));
                }
                if self.table.lock().unwrap().by_id.contains_key(id) || self.dir(id).exists() {
                    return Err(SupervisorError::invalid(
                        "id",
                        format!("a container with id {id} exists already"),
                    ));
                }
                id.clone()
            }
        };
        let name = match &req.name {
            Some(n) => {
                names::check_name(n).map_err(|e| SupervisorError::invalid("name", e))?;
                self.reserve_name(n, &id)?;
                n.clone()
            }
            None => loop {
                let n = names::random_name();
                if self.reserve_name(&n, &id).is_ok() {
                    break n;
                }
            },
        };
        match self.create_reserved(&id, &name, req).await {
            Ok(s) => Ok(s),
            Err(e) => {
                if self.resolve(&id).is_err() {
                    self.release_name(&name, &id);
                }
                Err(e)
            }
        }
    }

    pub(super) async fn prepare(
        &self,
        id: &str,
        name: &str,
        image: &str,
        volatile: bool,
    ) -> Result<PrepareReply> {
        let req = PrepareRequest {
            container_id: id.to_string(),
            image: image.to_string(),
            volatile,
        };
        let opts = RequestOptions::mutating(PREPARE_TIMEOUT);
        match self
            .ctx
            .bus
            .ask_local::<berth_proto::layer_store::verbs::Prepare>(&req, &opts)
            .await
        {
            Err(e) if e.remote().map(|r| r.code) == Some(ErrorCode::NotFound) => {
                tracing::info!(image, "image not on this node: pulling it");
                let pull = PullRequest {
                    reference: image.to_string(),
                    platform: None,
                    pull_id: None,
                };
                self.ctx
                    .bus
                    .ask_local::<berth_proto::puller::verbs::Pull>(
                        &pull,
                        &RequestOptions::mutating(PULL_TIMEOUT),
                    )
                    .await
                    .map_err(peer(name, &format!("pulling image {image}")))?;
                self.ctx
                    .bus
                    .ask_local::<berth_proto::layer_store::verbs::Prepare>(&req, &opts)
                    .await
                    .map_err(peer(name, "preparing the root filesystem"))
            }
            r => r.map_err(peer(name, "preparing the root filesystem")),
        }
    }

    pub(super) async fn create_reserved(
        self: &Arc<Self>,
        id: &str,
        name: &str,
        req: CreateRequest,
    ) -> Result<ContainerState> {
        let mut req = req;
        if let Some(s) = &req.options.stop_signal {
            parse_signal(s).map_err(|e| SupervisorError::invalid("stop signal", e))?;
        }
        // `container:NAME` may name the container, or a prefix of its id: the isolator wants
        // the id.
        if let iso::NetworkMode::Container(other) = &req.options.network {
            let c = self.resolve(other).map_err(|_| {
                SupervisorError::invalid(
                    "network",
                    format!("container:{other}: no such container to share the network of"),
                )
            })?;
            req.options.network = iso::NetworkMode::Container(c.id.clone());
        }
        let prepared = match &req.rootfs {
            Some(dir) => {
                let p = PathBuf::from(dir);
                if !p.is_absolute() || !p.is_dir() {
                    return Err(SupervisorError::invalid(
                        "rootfs",
                        format!("{dir:?} is not an absolute path to a directory"),
                    ));
                }
                if req.image.is_empty() {
                    req.image = dir.clone();
                }
                let cdir = self.dir(id);
                let (upper, work) = (cdir.join("upper"), cdir.join("work"));
                for d in [&upper, &work] {
                    std::fs::create_dir_all(d).map_err(|e| SupervisorError::io("create", d, e))?;
                }
                PrepareReply {
                    rootfs: iso::RootfsMount {
                        lowerdirs: vec![dir.clone()],
                        upperdir: upper.display().to_string(),
                        workdir: work.display().to_string(),
                        volatile: req.auto_remove,
                    },
                    image_digest: String::new(),
                    config: Default::default(),
                }
            }
            None if req.image.is_empty() => {
                return Err(SupervisorError::invalid("image", "no image given"))
            }
            // What a container removed at its exit writes is thrown away: never synced.
            None => self.prepare(id, name, &req.image, req.auto_remove).await?,
        };
        let built = (|| {
            let hc = merge::healthcheck(
                req.healthcheck.as_ref(),
                prepared.config.healthcheck.as_ref(),
            )
            .map_err(|e| SupervisorError::invalid("healthcheck", e))?;
            let spec = merge::spec(id, name, &req, &prepared.image_digest, &prepared.config)
                .map_err(|e| SupervisorError::invalid("container", e))?;
            if let Some(s) = &spec.stop_signal {
                parse_signal(s).map_err(|e| SupervisorError::invalid("image stop signal", e))?;
            }
            Ok::<_, SupervisorError>((hc, spec))
        })();
        let (hc, spec) = match built {
            Ok(x) => x,
            Err(e) => {
                self.discard_rootfs(id, name, &req).await;
                return Err(e);
            }
        };
        let state = ContainerState {
            id: id.to_string(),
            name: name.to_string(),
            node: self.node().to_string(),
            image: req.image.clone(),
            image_digest: prepared.image_digest.clone(),
            args: spec.args.clone(),
            status: ContainerStatus::Created,
            pid: None,
            created_at: now_rfc3339(),
            started_at: None,
            finished_at: None,
            exit_code: None,
            oom_killed: false,
            restart_count: 0,
            health: None,
            labels: spec.labels.clone(),
            restart: req.restart,
            error: None,
        };
        let rec = Record {
            stop_signal: spec
                .stop_signal
                .clone()
                .unwrap_or_else(|| merge::DEFAULT_STOP_SIGNAL.into()),
            stop_grace_period_ms: req
                .options
                .stop_grace_period_ms
                .unwrap_or(self.settings.stop_grace_period_ms),
            request: req,
            spec,
            rootfs: prepared.rootfs,
            healthcheck: hc,
            state,
            manually_stopped: false,
            exit_reported: true,
            backoff_step: 0,
        };
        // Synced now, or (created and started at once) by the start, while the isolator works.
        // Never for a container removed at its exit: after a power loss, recovery finds its
        // directory without a record and removes it (`sweep_orphans`).
        let start = rec.request.start;
        if let Err(e) = rec.save(&self.dir(id), !start && !rec.request.auto_remove) {
            self.discard_rootfs(id, name, &rec.request).await;
            return Err(SupervisorError::io("save the record in", &self.dir(id), e));
        }
        let c = self.insert(rec);
        let mut inner = c.inner.lock().await;
        if !start {
            tokio::join!(
                self.publish_state(&inner.rec.state),
                self.emit(&inner.rec, EV_CREATED, Map::new(), None)
            );
            return Ok(inner.rec.state.clone());
        }
        // Created and started in one request: `created` is announced once its process
        // exists (with the shim's and the init's pids), just before `started`.
        self.publish_state(&inner.rec.state).await;
        if let Err(e) = self.start_instance(&c, &mut inner, true).await {
            // A failed create leaves nothing: whatever its start made (a process, a cgroup,
            // files, the root filesystem) goes with the record, unannounced.
            inner.unannounced = true;
            drop(inner);
            if let Err(r) = self.remove(&c, true).await {
                tracing::warn!(%r, id = %c.id, "what a failed create made is not all removed");
            }
            return Err(e);
        }
        Ok(inner.rec.state.clone())
    }

    /// Undo a prepared root filesystem of a container that will not exist after all.
    pub(super) async fn discard_rootfs(&self, id: &str, name: &str, req: &CreateRequest) {
        if req.rootfs.is_none() {
            self.release_rootfs(id, name).await;
        }
        let _ = std::fs::remove_dir_all(self.dir(id));
    }

    pub(super) async fn release_rootfs(&self, id: &str, name: &str) -> Option<SupervisorError> {
        match self.ask_release(id).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(%e, id, "releasing the root filesystem failed");
                Some(peer(name, "releasing the root filesystem")(e))
            }
        }
    }

    /// Ask the layer-store to release a container's root filesystem (none there: done).
    pub(super) async fn ask_release(&self, id: &str) -> std::result::Result<(), BusError> {
        let r = self
            .ctx
            .bus
            .ask_local::<berth_proto::layer_store::verbs::Release>(
                &ReleaseRequest {
                    container_id: id.to_string(),
                },
                &RequestOptions::mutating(RELEASE_TIMEOUT),
            )
            .await;
        match r {
            Err(e) if e.remote().map(|r| r.code) == Some(ErrorCode::NotFound) => Ok(()),
            r => r.map(drop),
        }
    }
}
