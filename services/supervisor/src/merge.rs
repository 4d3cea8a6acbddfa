//! Merging an image's runtime config with the options of a create request, as Docker does.

use berth_proto::isolator::ContainerSpec;
use berth_proto::layer_store::ImageRuntimeConfig;
use berth_proto::supervisor::{CreateRequest, HealthCheck};

/// Docker's default `PATH`, added when neither the image nor the options set one.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
pub const DEFAULT_STOP_SIGNAL: &str = "SIGTERM";

/// The argv: entrypoint + command. A given entrypoint drops the image's command.
pub fn args(req: &CreateRequest, image: &ImageRuntimeConfig) -> Result<Vec<String>, String> {
    let o = &req.options;
    let (entry, cmd) = match &o.entrypoint {
        Some(e) => (e.clone(), o.cmd.clone().unwrap_or_default()),
        None => (
            image.entrypoint.clone(),
            o.cmd.clone().unwrap_or_else(|| image.cmd.clone()),
        ),
    };
    let mut args = entry;
    args.extend(cmd);
    if args.is_empty() {
        return Err(format!(
            "no command: image {} has neither an entrypoint nor a command, and none was given",
            req.image
        ));
    }
    Ok(args)
}

/// The image's environment with the options' entries overriding by key.
pub fn env(image: &[String], options: &[String]) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for (i, e) in options.iter().enumerate() {
        berth_proto::validate::env_entry(e)
            .map_err(|why| format!("environment entry {}: {why}", i + 1))?;
    }
    for e in image.iter().chain(options.iter()) {
        let key = e.split_once('=').map(|(k, _)| k).unwrap_or(e);
        if let Some(slot) = out
            .iter_mut()
            .find(|x| x.split_once('=').map(|(k, _)| k).unwrap_or(x) == key)
        {
            *slot = e.clone();
        } else {
            out.push(e.clone());
        }
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    Ok(out)
}

/// The health check in effect: the request's (its unset test taken from the image), else the
/// image's; `NONE` disables it.
pub fn healthcheck(
    req: Option<&HealthCheck>,
    image: Option<&Vec<String>>,
) -> Result<Option<HealthCheck>, String> {
    let mut hc = match (req, image) {
        (Some(r), _) if !r.test.is_empty() => r.clone(),
        (Some(r), Some(t)) => HealthCheck {
            test: t.clone(),
            ..r.clone()
        },
        (Some(_), None) => return Ok(None),
        (None, Some(t)) => HealthCheck {
            test: t.clone(),
            ..Default::default()
        },
        (None, None) => return Ok(None),
    };
    // The same checks the spec loader runs on `healthcheck`.
    berth_proto::validate::healthcheck_test(&hc.test)?;
    berth_proto::validate::healthcheck(&hc)?;
    if hc.test.first().map(String::as_str) == Some("NONE") {
        return Ok(None);
    }
    hc.test.shrink_to_fit();
    Ok(Some(hc))
}

/// The argv a health check runs inside the container.
pub fn health_argv(hc: &HealthCheck) -> Vec<String> {
    match hc.test.first().map(String::as_str) {
        Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), hc.test[1].clone()],
        _ => hc.test[1..].to_vec(),
    }
}

/// Build the isolator's spec for container `id` named `name`.
pub fn spec(
    id: &str,
    name: &str,
    req: &CreateRequest,
    image_digest: &str,
    image: &ImageRuntimeConfig,
) -> Result<ContainerSpec, String> {
    let o = &req.options;
    let mut labels = image.labels.clone();
    labels.extend(req.labels.clone());
    Ok(ContainerSpec {
        id: id.to_string(),
        name: name.to_string(),
        image: req.image.clone(),
        image_digest: image_digest.to_string(),
        args: args(req, image)?,
        env: env(&image.env, &o.env)?,
        working_dir: o.working_dir.clone().or_else(|| image.working_dir.clone()),
        user: o.user.clone().or_else(|| image.user.clone()),
        hostname: o.hostname.clone(),
        mounts: o.mounts.clone(),
        resources: o.resources.clone(),
        read_only: o.read_only,
        cap_add: o.cap_add.clone(),
        cap_drop: o.cap_drop.clone(),
        seccomp: o.seccomp,
        seccomp_profile: o.seccomp_profile.clone(),
        no_new_privileges: o.no_new_privileges,
        init: o.init,
        tty: o.tty,
        stop_signal: Some(
            o.stop_signal
                .clone()
                .or_else(|| image.stop_signal.clone())
                .unwrap_or_else(|| DEFAULT_STOP_SIGNAL.to_string()),
        ),
        labels,
        network: o.network.clone(),
        aliases: o.aliases.clone(),
        ports: o.ports.clone(),
        userns_remap: o.userns_remap,
        devices: o.devices.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::supervisor::ContainerOptions;

    fn image() -> ImageRuntimeConfig {
        ImageRuntimeConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into(), "--port=80".into()],
            env: vec!["PATH=/bin".into(), "A=1".into()],
            working_dir: Some("/srv".into()),
            user: Some("www".into()),
            stop_signal: Some("SIGQUIT".into()),
            healthcheck: Some(vec!["CMD-SHELL".into(), "true".into()]),
            labels: [("a".to_string(), "image".to_string())].into(),
        }
    }

    fn req(o: ContainerOptions) -> CreateRequest {
        CreateRequest {
            image: "img".into(),
            options: o,
            ..Default::default()
        }
    }

    #[test]
    fn command_and_entrypoint_merge_like_docker() {
        let i = image();
        assert_eq!(
            args(&req(ContainerOptions::default()), &i).unwrap(),
            ["/entry", "serve", "--port=80"]
        );
        let o = ContainerOptions {
            cmd: Some(vec!["x".into()]),
            ..Default::default()
        };
        assert_eq!(args(&req(o), &i).unwrap(), ["/entry", "x"]);
        let o = ContainerOptions {
            entrypoint: Some(vec!["/bin/sh".into()]),
            ..Default::default()
        };
        assert_eq!(args(&req(o), &i).unwrap(), ["/bin/sh"]);
        let e = args(
            &req(ContainerOptions::default()),
            &ImageRuntimeConfig::default(),
        )
        .unwrap_err();
        assert!(e.contains("no command"), "{e}");
    }

    #[test]
    fn environment_overrides_by_key_and_gets_a_path() {
        let e = env(
            &["PATH=/bin".into(), "A=1".into()],
            &["A=2".into(), "B=".into()],
        )
        .unwrap();
        assert_eq!(e, ["PATH=/bin", "A=2", "B="]);
        let e = env(&[], &["X=1".into()]).unwrap();
        assert_eq!(e, [DEFAULT_PATH, "X=1"]);
        assert!(env(&[], &["=1".into()]).unwrap_err().contains("entry 1"));
        assert!(env(&[], &["NOVALUE".into()]).is_err());
    }

    #[test]
    fn spec_takes_options_over_image() {
        let o = ContainerOptions {
            user: Some("0".into()),
            ..Default::default()
        };
        let mut r = req(o);
        r.labels.insert("a".into(), "req".into());
        let s = spec("id", "n", &r, "sha256:x", &image()).unwrap();
        assert_eq!(s.user.as_deref(), Some("0"));
        assert_eq!(s.working_dir.as_deref(), Some("/srv"));
        assert_eq!(s.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(s.labels["a"], "req");
    }

    #[test]
    fn healthchecks_merge_and_are_checked() {
        let img = vec!["CMD-SHELL".to_string(), "true".to_string()];
        let h = healthcheck(None, Some(&img)).unwrap().unwrap();
        assert_eq!(health_argv(&h), ["/bin/sh", "-c", "true"]);
        let r = HealthCheck {
            test: vec![],
            interval_ms: Some(500),
            ..Default::default()
        };
        let h = healthcheck(Some(&r), Some(&img)).unwrap().unwrap();
        assert_eq!(h.interval_ms, Some(500));
        assert_eq!(h.test, img);
        let none = HealthCheck {
            test: vec!["NONE".into()],
            ..Default::default()
        };
        assert_eq!(healthcheck(Some(&none), Some(&img)).unwrap(), None);
        let cmd = HealthCheck {
            test: vec!["CMD".into(), "/bin/check".into(), "-q".into()],
            ..Default::default()
        };
        let h = healthcheck(Some(&cmd), None).unwrap().unwrap();
        assert_eq!(health_argv(&h), ["/bin/check", "-q"]);
        let bad = HealthCheck {
            test: vec!["RUN".into(), "x".into()],
            ..Default::default()
        };
        assert!(healthcheck(Some(&bad), None).is_err());
    }
}
