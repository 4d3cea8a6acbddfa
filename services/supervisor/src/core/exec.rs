//! Waiting for a container's end, running a command in it, and what a health checker sees of
//! its container (`Checked`, a `health::Target`).

use super::*;

impl Supervisor {
    /// Wait until the container is not running and no restart is pending.
    pub async fn wait(&self, c: &Arc<Container>) -> Result<WaitReply> {
        let mut rx = c.changed.subscribe();
        loop {
            {
                let inner = c.inner.lock().await;
                let st = &inner.rec.state;
                let busy = st.status.is_alive() || st.status == ContainerStatus::Restarting;
                if !busy || inner.removed {
                    return Ok(WaitReply {
                        exit_code: st.exit_code.unwrap_or(0),
                        oom_killed: st.oom_killed,
                    });
                }
            }
            tokio::select! {
                _ = self.token.cancelled() => return Err(SupervisorError::invalid("wait", "the supervisor is shutting down")),
                r = rx.changed() => if r.is_err() { return Err(SupervisorError::NotFound(c.id.clone())) },
            }
        }
    }

    pub async fn exec(
        &self,
        c: &Container,
        req: ExecRequest,
        timeout: Duration,
        kill_after: Option<Duration>,
    ) -> Result<iso::ExecReply> {
        {
            let inner = c.inner.lock().await;
            if inner.rec.state.status != ContainerStatus::Running {
                return Err(state_err(
                    &inner.rec,
                    format!("is {}, not running", inner.rec.state.status.as_str()),
                ));
            }
        }
        self.ctx
            .bus
            .ask_local::<berth_proto::isolator::verbs::Exec>(
                &iso::ExecRequest {
                    id: c.id.clone(),
                    args: req.args,
                    env: req.env,
                    user: req.user,
                    working_dir: req.working_dir,
                    stream: req.stream,
                    timeout_ms: kill_after.map(|d| d.as_millis() as u64),
                },
                // With `kill_after`, the isolator's reply follows the kill shortly.
                &RequestOptions::timeout(timeout + Duration::from_secs(5)),
            )
            .await
            .map_err(peer(&c.name, "exec"))
    }
}

/// What a health checker sees of its container ([`health::Target`]): the core starts the
/// checker with one, so health never names the supervisor.
pub(super) struct Checked {
    pub(super) sup: Arc<Supervisor>,
    pub(super) c: Arc<Container>,
    /// The instance checked, and what ends its tasks.
    pub(super) gen: u64,
    pub(super) run: CancellationToken,
}

impl health::Target for Checked {
    fn id(&self) -> &str {
        &self.c.id
    }

    fn running(&self) -> bool {
        Supervisor::view(&self.c).state.status == ContainerStatus::Running
    }

    async fn exec(&self, req: ExecRequest, timeout: Duration) -> Result<iso::ExecReply> {
        self.sup.exec(&self.c, req, timeout, Some(timeout)).await
    }

    async fn record(&self, probe: HealthProbe, rules: &health::Rules) -> Option<HealthAction> {
        let (sup, c) = (&self.sup, &self.c);
        let mut inner = c.inner.lock().await;
        if self.run.is_cancelled() || inner.gen != self.gen {
            return None;
        }
        let keep = sup.settings.health_log_len;
        let in_start = rules.in_start_period();
        let h = inner.rec.state.health.as_mut()?;
        if health::apply_probe(h, probe, in_start, rules.retries, keep) {
            let unhealthy = h.status == HealthStatus::Unhealthy;
            sup.health_changed(c, &inner).await;
            if unhealthy {
                Some(inner.rec.request.health_on_failure)
            } else {
                Some(HealthAction::None)
            }
        } else {
            sup.refresh_view(c, &inner);
            Some(HealthAction::None)
        }
    }

    async fn act(&self, action: HealthAction) -> Result<()> {
        let (sup, c) = (&self.sup, &self.c);
        match action {
            HealthAction::None => Ok(()),
            HealthAction::Restart => sup.restart_counted(c).await,
            HealthAction::Stop => sup.stop(c, None, true).await.map(|_| ()),
            HealthAction::Kill => sup.kill(c, None).await,
        }
    }
}

impl Supervisor {
    /// Record a health transition (with the container locked).
    async fn health_changed(&self, c: &Container, inner: &Inner) {
        if let Err(e) = self.commit(c, inner).await {
            tracing::warn!(%e, "health not recorded");
        }
        if let Some(h) = &inner.rec.state.health {
            self.emit(
                &inner.rec,
                EV_HEALTH,
                attrs! {"health" => h.status.as_str()},
                None,
            )
            .await;
        }
    }

    /// Refresh the view only (a probe that changed nothing but the probe log).
    pub(super) fn refresh_view(&self, c: &Container, inner: &Inner) {
        *c.view.lock().unwrap() = inner.rec.clone();
    }
}
