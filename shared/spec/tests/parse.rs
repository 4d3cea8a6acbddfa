//! Compose files as people write them (fixtures/good), and the loader's behaviour around them:
//! interpolation, `.env`, anchors and merge keys, several files, profiles, project names,
//! unsupported keys as warnings, and the refusal of alias bombs and huge inputs.

use berth_spec::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn fixture(p: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(p)
}

fn env(vars: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
    Some(
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn load_files(files: &[&str], vars: &[(&str, &str)]) -> Result<Loaded, SpecError> {
    load(&LoadOptions {
        files: files.iter().map(|f| fixture(f)).collect(),
        env: env(vars),
        ..Default::default()
    })
}

fn load_one(text: &str) -> Result<Loaded, SpecError> {
    load_texts(
        vec![("compose.yaml".into(), text.into())],
        PathBuf::from("/srv/app"),
        &LoadOptions {
            env: env(&[("TAG", "1.36"), ("EMPTY", "")]),
            ..Default::default()
        },
    )
}

fn err(text: &str) -> String {
    load_one(text).unwrap_err().to_string()
}

#[test]
fn wordpress() {
    let l = load_files(&["good/wordpress.yaml"], &[]).unwrap();
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    let p = &l.project;
    assert_eq!(p.name, "good");
    assert_eq!(p.start_order(), ["db", "wordpress"]);
    let db = &p.services["db"];
    assert_eq!(
        db.command.as_deref(),
        Some(&["--default-authentication-plugin=mysql_native_password".to_string()][..])
    );
    assert_eq!(db.environment["MYSQL_DATABASE"], "wordpress");
    assert_eq!(db.expose, ["3306", "33060"]);
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, ["CMD", "mysqladmin", "ping", "-h", "localhost"]);
    assert_eq!(
        (h.interval_ms, h.timeout_ms, h.retries, h.start_period_ms),
        (Some(10_000), Some(5_000), Some(5), Some(30_000))
    );
    let wp = &p.services["wordpress"];
    assert_eq!(
        wp.depends_on["db"],
        DependsOn {
            condition: Condition::ServiceHealthy,
            required: true,
            restart: true
        }
    );
    assert_eq!(wp.environment["WORDPRESS_DB_HOST"], "db");
    assert_eq!(
        wp.ports,
        [PortSpec {
            host_ip: None,
            host_port: Some(80),
            container_port: 80,
            protocol: Protocol::Tcp
        }]
    );
    assert_eq!(
        wp.volumes,
        [VolumeMount {
            kind: MountType::Volume,
            source: "wp_data".into(),
            target: "/var/www/html".into(),
            read_only: false,
            tmpfs_size: None
        }]
    );
    assert_eq!(wp.restart.as_deref(), Some("always"));
    assert_eq!(p.volumes.len(), 2);
}

#[test]
fn monitoring_with_anchors_extensions_and_defaults() {
    let l = load_files(&["good/monitoring.yaml"], &[("GF_PASSWORD", "s3cret")]).unwrap();
    let p = &l.project;
    assert_eq!(
        l.warnings.len(),
        1,
        "only the version notice: {:?}",
        l.warnings
    );
    assert!(
        l.warnings[0].ends_with("monitoring.yaml:3:1: `version` is obsolete and ignored"),
        "{:?}",
        l.warnings
    );
    let prom = &p.services["prometheus"];
    assert_eq!(prom.image, "prom/prometheus:v2.53.0");
    assert_eq!(prom.restart.as_deref(), Some("unless-stopped"));
    assert_eq!(prom.labels["org.example.stack"], "monitoring");
    assert!(prom.networks.contains_key("monitoring"));
    assert_eq!(prom.container_name.as_deref(), Some("prometheus"));
    assert_eq!(
        prom.command.as_ref().unwrap()[1],
        "--storage.tsdb.retention.time=15d"
    );
    assert_eq!(prom.volumes[0].kind, MountType::Bind);
    assert_eq!(
        prom.volumes[0].source,
        fixture("good/prometheus").display().to_string()
    );
    assert!(prom.volumes[0].read_only);
    assert_eq!(prom.volumes[1].source, "prometheus_data");
    assert_eq!(prom.ports[0].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(prom.ports[0].host_port, Some(9090));
    assert_eq!(prom.limits.memory_bytes, Some(256 << 20));
    assert_eq!(prom.limits.cpus, Some(0.25));
    assert_eq!(prom.limits.pids, Some(100));

    let g = &p.services["grafana"];
    assert_eq!(g.environment["GF_SECURITY_ADMIN_USER"], "admin");
    assert_eq!(g.environment["GF_SECURITY_ADMIN_PASSWORD"], "s3cret");
    assert_eq!(g.ports[0].host_port, Some(3000));
    assert_eq!(g.networks["monitoring"].aliases, ["dashboards"]);
    assert_eq!(g.limits.memory_bytes, Some(256 << 20));
    assert_eq!(
        g.depends_on["prometheus"].condition,
        Condition::ServiceStarted
    );

    let n = &p.services["node-exporter"];
    assert_eq!(
        n.command.as_deref(),
        Some(&["--path.rootfs=/host".to_string()][..])
    );
    assert!(n.read_only);
    assert_eq!(n.cap_drop, ["ALL"]);
    assert_eq!(n.tmpfs, ["/tmp:size=16m"]);
    assert_eq!(n.volumes[0].source, "/");
    assert_eq!(n.stop_grace_period_ms, Some(90_000));
    assert_eq!(n.stop_signal.as_deref(), Some("SIGINT"));
    assert_eq!(
        p.networks["monitoring"].name.as_deref(),
        Some("monitoring_net")
    );
    assert_eq!(p.start_order(), ["node-exporter", "prometheus", "grafana"]);

    // The same file with the required variable missing: the error points at it.
    let e = load_files(&["good/monitoring.yaml"], &[]).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}:45:9: service grafana: required variable GF_PASSWORD is missing a value: set GF_PASSWORD",
            fixture("good/monitoring.yaml").display()
        )
    );
}

#[test]
fn dot_env_env_file_and_variables() {
    let l = load_files(&["good/dotenv/compose.yaml"], &[("TAG", "2.0")]).unwrap();
    let p = &l.project;
    assert_eq!(p.name, "shop");
    let api = &p.services["api"];
    // The given environment wins over .env.
    assert_eq!(api.image, "registry.example:5000/api:2.0");
    assert_eq!(api.replicas, 3);
    assert!(!api.read_only);
    assert_eq!(api.environment["DATABASE_URL"], "postgres://db/2.0");
    assert_eq!(api.environment["QUOTED"], "keep $TAG");
    // environment wins over env_file.
    assert_eq!(api.environment["LOG_LEVEL"], "debug");
    assert_eq!(api.environment["SECRET_FROM_SHELL"], "from-dotenv");
    assert_eq!(api.environment["COST"], "$5");
    assert_eq!(api.labels["price"], "unset");
    assert_eq!(api.labels["alt"], "tagged");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    let l = load(&LoadOptions {
        files: vec![fixture("good/dotenv/compose.yaml")],
        env: env(&[("PROJECT", "Shop2")]),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        l.to_string().ends_with(
            "compose.yaml:2:1: project name \"Shop2\" must be lowercase letters, digits, '-' and '_', starting with a letter or digit"
        ),
        "{l}"
    );
}

#[test]
fn several_files_merge_as_compose_merges_them() {
    let l = load_files(
        &[
            "good/merge/compose.yaml",
            "good/merge/compose.override.yaml",
        ],
        &[],
    )
    .unwrap();
    let p = &l.project;
    assert_eq!(p.name, "merge");
    let w = &p.services["web"];
    assert_eq!(w.image, "nginx:1.27");
    assert_eq!(w.command.as_ref().unwrap()[0], "nginx-debug");
    let envs: Vec<(&str, &str)> = w
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(envs, [("DEBUG", "1"), ("MODE", "dev"), ("WORKERS", "4")]);
    assert_eq!(w.ports.len(), 2);
    assert_eq!(w.volumes.len(), 2);
    let site = w
        .volumes
        .iter()
        .find(|v| v.target == "/usr/share/nginx/html")
        .unwrap();
    assert!(site.source.ends_with("/merge/dev-site"), "{}", site.source);
    assert!(!site.read_only);
    assert_eq!(
        w.depends_on.keys().collect::<Vec<_>>(),
        ["app", "cache"],
        "list and map forms merge by name"
    );
    assert_eq!(w.labels["tier"], "front");
    assert_eq!(w.labels["debug"], "true");
    let h = w.healthcheck.as_ref().unwrap();
    assert_eq!(h.test[0], "CMD");
    assert_eq!(h.interval_ms, Some(5_000));
    assert_eq!(p.services["app"].image, "app:1.0");
    assert_eq!(p.services["app"].networks["back"].aliases, ["api"]);
    assert_eq!(p.services["cache"].networks["back"].aliases, ["redis"]);
    assert_eq!(p.start_order(), ["app", "cache", "web"]);

    // An error in the override file is located in the override file.
    let e = load_texts(
        vec![
            (
                "base.yaml".into(),
                "services:\n  w:\n    image: x\n    restart: always\n".into(),
            ),
            (
                "over.yaml".into(),
                "services:\n  w:\n    restart: whenever\n".into(),
            ),
        ],
        PathBuf::from("/p"),
        &LoadOptions {
            env: env(&[]),
            ..Default::default()
        },
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "over.yaml:3:5: service w: restart: unknown restart policy \"whenever\": expected no, always, unless-stopped, on-failure[:max]"
    );
}

#[test]
fn config_hash_changes_with_config_not_with_replicas() {
    let a = load_one("services:\n  w:\n    image: busybox\n    environment: {A: '1'}\n").unwrap();
    let b = load_one("services:\n  w:\n    image: busybox\n    environment: {A: '2'}\n").unwrap();
    let c = load_one(
        "services:\n  w:\n    image: busybox\n    environment: [A=1]\n    deploy: {replicas: 3}\n",
    )
    .unwrap();
    let h = |l: &Loaded| l.project.services["w"].config_hash();
    assert_ne!(h(&a), h(&b));
    assert_eq!(
        h(&a),
        h(&c),
        "list and map forms are the same configuration"
    );
    assert_eq!(c.project.services["w"].replicas, 3);
    // Stored as JSON and read back: the same project, the same hashes.
    let json = serde_json::to_string(&c.project).unwrap();
    let back: Project = serde_json::from_str(&json).unwrap();
    assert_eq!(back, c.project);
    assert_eq!(back.services["w"].config_hash(), h(&c));
}

#[test]
fn strings_split_like_a_shell_and_dollars_escape() {
    let l =
        load_one("services:\n  w:\n    image: busybox\n    command: sh -c 'echo \"$$HOME\" x'\n")
            .unwrap();
    assert_eq!(
        l.project.services["w"].command.as_ref().unwrap(),
        &vec!["sh".to_string(), "-c".into(), "echo \"$HOME\" x".into()]
    );
}

#[test]
fn profiles_and_project_names() {
    let y = "name: my_app\nservices:\n  a:\n    image: x\n  dbg:\n    image: y\n    profiles: [debug]\n  opt:\n    image: z\n    depends_on:\n      dbg: {condition: service_started, required: false}\n";
    let l = load_one(y).unwrap();
    assert_eq!(l.project.name, "my_app");
    assert!(!l.project.services.contains_key("dbg"));
    assert!(
        l.project.services["opt"].depends_on.is_empty(),
        "an optional dependency in an inactive profile is dropped"
    );
    let o = LoadOptions {
        profiles: vec!["debug".into()],
        project_name: Some("other".into()),
        env: env(&[]),
        ..Default::default()
    };
    let l = load_texts(vec![("c.yaml".into(), y.into())], PathBuf::from("/p"), &o).unwrap();
    assert!(l.project.services.contains_key("dbg"));
    assert!(l.project.services["opt"].depends_on.contains_key("dbg"));
    assert_eq!(l.project.name, "other");
    let o = LoadOptions {
        project_name: Some("Other".into()),
        env: env(&[]),
        ..Default::default()
    };
    let e = load_texts(vec![("c.yaml".into(), y.into())], PathBuf::from("/p"), &o).unwrap_err();
    assert_eq!(
        e.to_string(),
        "-p: project name \"Other\" must be lowercase letters, digits, '-' and '_', starting with a letter or digit"
    );
    // Without a name: the directory, normalised.
    let l = load_texts(
        vec![("c.yaml".into(), "services:\n  a:\n    image: x\n".into())],
        PathBuf::from("/home/me/My.Web App"),
        &LoadOptions {
            env: env(&[]),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(l.project.name, "mywebapp");
    let l = load_texts(
        vec![("c.yaml".into(), "services:\n  a:\n    image: x\n".into())],
        PathBuf::from("/p"),
        &LoadOptions {
            env: env(&[("COMPOSE_PROJECT_NAME", "from-env")]),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(l.project.name, "from-env");
}

#[test]
fn unset_variables_warn() {
    let l = load_one("services:\n  w:\n    image: busybox${NOPE}\n").unwrap();
    assert_eq!(
        l.warnings,
        ["compose.yaml: the NOPE variable is not set; using an empty string"]
    );
    assert_eq!(l.project.services["w"].image, "busybox");
    // An empty tag is not a reference the puller takes: refused where it is written.
    let e = load_one("services:\n  w:\n    image: busybox:${NOPE}\n").unwrap_err();
    assert_eq!(
        e.to_string(),
        "compose.yaml:3:5: service w: image: invalid reference \"busybox:\": the tag after ':' is empty"
    );
}

#[test]
fn unsupported_keys_can_be_downgraded_to_warnings_but_unknown_keys_cannot() {
    let o = LoadOptions {
        allow_unsupported: true,
        env: env(&[]),
        ..Default::default()
    };
    let y = "services:\n  web:\n    image: x\n    privileged: true\n    build: .\n    deploy:\n      placement: {constraints: [node.role==manager]}\n";
    let l = load_texts(vec![("c.yaml".into(), y.into())], PathBuf::from("/p"), &o).unwrap();
    assert_eq!(
        l.warnings,
        [
            "c.yaml:5:5: service web: `build` is not supported yet: build the image elsewhere and set `image` (ignored)",
            "c.yaml:4:5: service web: `privileged` is not supported by berth (ignored)",
            "c.yaml:7:7: service web: deploy: `placement` is not supported by berth (ignored)",
        ]
    );
    assert_eq!(l.project.services["web"].image, "x");
    let e = load_texts(
        vec![(
            "c.yaml".into(),
            "services:\n  web:\n    image: x\n    ports_: []\n".into(),
        )],
        PathBuf::from("/p"),
        &o,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "c.yaml:4:5: service web: unknown key `ports_` (did you mean `ports`?)"
    );
}

#[test]
fn yaml_1_2_booleans_and_interpolated_types_as_compose_reads_them() {
    let l = load_one(
        "services:\n  w:\n    image: y\n    restart: no\n    read_only: true\n    init: 'yes'\n    environment: {A: on}\n    deploy: {replicas: '${EMPTY:-4}'}\n",
    )
    .unwrap();
    let w = &l.project.services["w"];
    assert_eq!(w.restart.as_deref(), Some("no"));
    assert!(w.read_only);
    assert!(w.init);
    assert_eq!(w.environment["A"], "on");
    assert_eq!(w.replicas, 4);
}

#[test]
fn x_berth_rootfs_runs_a_directory() {
    let l = load_one("services:\n  w:\n    x-berth:\n      rootfs: ./root\n").unwrap();
    assert_eq!(
        l.project.services["w"].rootfs.as_deref(),
        Some("/srv/app/root")
    );
    assert_eq!(
        err("services:\n  w:\n    x-berth:\n      nodes: [a]\n"),
        "compose.yaml:4:7: service w: x-berth.nodes is not a berth extension (rootfs)"
    );
}

#[test]
fn tmpfs_options_berth_does_not_apply_are_warned_about() {
    let l = load_one(
        "services:\n  w:\n    image: x\n    tmpfs: [\"/run:size=1m,noexec,uid=1000\", /tmp]\n",
    )
    .unwrap();
    assert_eq!(
        l.warnings,
        ["compose.yaml:4:13: service w: tmpfs: \"/run:size=1m,noexec,uid=1000\": noexec, uid=1000 not applied by berth (a tmpfs is mounted nosuid,nodev,mode=1777)"]
    );
}

#[test]
fn positions_in_flow_style_and_through_anchors() {
    assert_eq!(
        err("services:\n  web: {image: x, ports: [\"80:80\", \"1:2:3:4\"]}\n"),
        "compose.yaml:2:36: service web: ports: \"1:2:3:4\": \"1:2\" is not an IP address"
    );
    // An alias used by two services: the error is where the bad value is written.
    assert_eq!(
        err("x-hc: &hc\n  test: [CMD, true]\n  interval: soon\nservices:\n  a:\n    image: x\n    healthcheck: *hc\n"),
        "compose.yaml:3:3: service a: healthcheck.interval: invalid duration \"soon\": expected a number with a unit like 10s, 1m30s or 500ms"
    );
}

#[test]
fn yaml_errors_carry_the_parser_position() {
    let e = err("services:\n  web:\n    image: x\n    image: y\n");
    assert_eq!(e, "compose.yaml:4:5: invalid YAML: duplicate key `image`");
    let e = err("services:\n  web: [unclosed\n");
    assert!(e.starts_with("compose.yaml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    assert_eq!(
        err("services:\n  ? [a, b]\n  : x\n"),
        "compose.yaml:2:5: invalid YAML: a mapping key must be a scalar"
    );
}

/// An alias bomb of 10 levels of 9 ("billion laughs": 9^10 nodes) is refused by the parser's
/// budget instead of being expanded.
#[test]
fn alias_bombs_are_refused() {
    let mut bomb = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    let mut prev = "a".to_string();
    for n in ["b", "c", "d", "e", "f", "g", "h", "i", "j"] {
        bomb.push_str(&format!(
            "x-{n}: &{n} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
        prev = n.to_string();
    }
    bomb.push_str("services:\n  w:\n    image: x\n    command: *j\n");
    let t = std::time::Instant::now();
    let e = err(&bomb);
    let took = t.elapsed();
    assert!(
        e.ends_with(
            "invalid YAML: refused: aliases expand to more than 50000 nodes (an alias bomb?)"
        ),
        "{e}"
    );
    eprintln!("alias bomb refused in {took:?}: {e}");
    // Generous: expanding it would take minutes and gigabytes.
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}

#[test]
fn huge_files_are_refused_before_parsing() {
    let dir = tempdir("big");
    let f = dir.0.join("compose.yaml");
    std::fs::write(&f, "x".repeat(berth_spec::load::MAX_FILE_BYTES + 1)).unwrap();
    let e = load(&LoadOptions {
        files: vec![f.clone()],
        ..Default::default()
    })
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "{}: file is {} bytes; berth refuses spec files over {} bytes",
            f.display(),
            berth_spec::load::MAX_FILE_BYTES + 1,
            berth_spec::load::MAX_FILE_BYTES
        )
    );
    // Just under the limit but millions of tiny nodes: the parser's event budget refuses it.
    let mut many = String::from("services:\n  w:\n    image: x\nx-big: [");
    while many.len() < berth_spec::load::MAX_FILE_BYTES - 10 {
        many.push_str("1,");
    }
    many.push_str("1]\n");
    let t = std::time::Instant::now();
    let e = err(&many);
    eprintln!(
        "{} bytes of nodes refused in {:?}: {e}",
        many.len(),
        t.elapsed()
    );
    assert!(
        e.ends_with("invalid YAML: refused: more than 100000 YAML nodes"),
        "{e}"
    );
}

#[test]
fn hundreds_of_services_load() {
    let mut y =
        String::from("x-common: &common\n  restart: always\n  labels: {team: a}\nservices:\n");
    for i in 0..300 {
        y.push_str(&format!(
            "  s{i}:\n    <<: *common\n    image: busybox:latest\n    command: [sleep, '3600']\n    environment: {{N: '{i}', MODE: prod}}\n    ports: ['{}:80']\n    deploy: {{replicas: 2, resources: {{limits: {{memory: 16m}}}}}}\n{}",
            10000 + i,
            if i > 0 { format!("    depends_on: [s{}]\n", i - 1) } else { String::new() }
        ));
    }
    let t = std::time::Instant::now();
    let l = load_one(&y).unwrap();
    eprintln!("300 services loaded in {:?}", t.elapsed());
    assert_eq!(l.project.services.len(), 300);
    let order = l.project.start_order();
    assert_eq!(order[0], "s0");
    assert_eq!(order[299], "s299");
    assert_eq!(l.project.services["s7"].labels["team"], "a");
}

#[test]
fn every_example_in_compose_parses() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../compose");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension()
            .map(|x| x == "yaml" || x == "yml")
            .unwrap_or(false)
        {
            let l = load(&LoadOptions {
                files: vec![p.clone()],
                env: env(&[]),
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(!l.project.services.is_empty(), "{}", p.display());
            assert!(l.warnings.is_empty(), "{}: {:?}", p.display(), l.warnings);
            n += 1;
        }
    }
    assert!(n >= 2);
}

#[test]
fn the_web_example_is_what_the_quick_start_says() {
    let l = load(&LoadOptions {
        files: vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../compose/web.yaml")],
        env: env(&[]),
        ..Default::default()
    })
    .unwrap();
    let p = &l.project;
    assert_eq!(p.name, "web");
    assert_eq!(p.start_order(), ["httpd", "worker"]);
    let httpd = &p.services["httpd"];
    assert_eq!(httpd.image, "busybox:latest");
    assert!(httpd.healthcheck.is_some());
    assert_eq!(httpd.volumes[0].source, "site");
    assert!(p.volumes.contains_key("site"));
    let worker = &p.services["worker"];
    assert_eq!(worker.replicas, 2);
    assert_eq!(
        worker.depends_on["httpd"].condition,
        Condition::ServiceHealthy
    );
    assert!(worker.limits.memory_bytes.is_some() && worker.limits.cpus.is_some());
}

/// A temporary directory removed on drop.
struct TempDir(PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
fn tempdir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "berth-spec-{tag}-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}

#[test]
fn security_opt_reads_seccomp_profiles_relative_to_the_file() {
    let dir = tempfile_dir();
    std::fs::write(
        dir.join("deny.json"),
        r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("broken.json"), "{").unwrap();
    let load_in = |text: &str| {
        load_texts(
            vec![("compose.yaml".into(), text.into())],
            dir.clone(),
            &LoadOptions {
                env: env(&[]),
                ..Default::default()
            },
        )
    };
    let l = load_in(
        "services:\n  a:\n    image: x\n    security_opt: [\"seccomp:./deny.json\", \"no-new-privileges:false\"]\n  b:\n    image: x\n    security_opt: [\"seccomp=unconfined\"]\n",
    )
    .unwrap();
    let a = &l.project.services["a"];
    match &a.seccomp {
        Some(Seccomp::Profile { source, json }) => {
            assert_eq!(source, &dir.join("deny.json").display().to_string());
            assert!(json.contains("SCMP_ACT_ALLOW"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(a.no_new_privileges, Some(false));
    assert_eq!(l.project.services["b"].seccomp, Some(Seccomp::Unconfined));
    let e =
        load_in("services:\n  a:\n    image: x\n    security_opt: [\"seccomp:missing.json\"]\n")
            .unwrap_err()
            .to_string();
    assert!(
        e.contains("missing.json") && e.contains("compose.yaml:4:"),
        "{e}"
    );
    let e = load_in("services:\n  a:\n    image: x\n    security_opt: [\"seccomp:broken.json\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken.json: not valid JSON"), "{e}");
    let e = load_in("services:\n  a:\n    image: x\n    security_opt: [\"label:disable\"]\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"label:disable\""), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory of this test's own.
fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "berth-spec-seccomp-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
