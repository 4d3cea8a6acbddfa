//! Compose files as people write them, and each kind of bad input with its exact position.

use berth_spec::*;
use std::collections::BTreeMap;
use std::path::PathBuf;

fn opts(env: &[(&str, &str)]) -> LoadOptions {
    LoadOptions {
        env: Some(
            env.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..Default::default()
    }
}

fn load_one(text: &str) -> Result<Loaded, SpecError> {
    load_texts(
        vec![("compose.yaml".into(), text.into())],
        PathBuf::from("/srv/app"),
        &opts(&[("TAG", "1.36"), ("EMPTY", "")]),
    )
}

fn err(text: &str) -> String {
    load_one(text).unwrap_err().to_string()
}

#[test]
fn a_real_world_style_file() {
    let y = r#"
version: "3.8"
name: shop
x-common: &common
  restart: unless-stopped
  labels:
    team: web
services:
  web:
    <<: *common
    image: "registry.example:5000/shop/web:${TAG}"
    container_name: shop-web
    command: ["nginx", "-g", "daemon off;"]
    environment:
      - MODE=prod
      - DEBUG
    ports:
      - "8080:80"
      - "127.0.0.1:8443:443/tcp"
      - "9000-9001:9000-9001/udp"
      - target: 53
        published: "5353"
        protocol: udp
    volumes:
      - ./html:/usr/share/nginx/html:ro
      - cache:/var/cache
      - type: tmpfs
        target: /run
        tmpfs:
          size: 16m
    depends_on:
      db:
        condition: service_healthy
    networks: [front, back]
    stop_grace_period: 1m30s
  db:
    <<: *common
    image: postgres:${PG:-16}
    environment:
      POSTGRES_PASSWORD: secret
      PORT: 5432
    healthcheck:
      test: pg_isready -U postgres
      interval: 10s
      retries: 5
      start_period: 30s
    deploy:
      resources:
        limits: {memory: 512m, cpus: "1.5", pids: 200}
    networks:
      back:
        aliases: [database]
    x-note: kept out
volumes:
  cache:
networks:
  front:
  back:
"#;
    let l = load_one(y).unwrap();
    let p = &l.project;
    assert_eq!(p.name, "shop");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("version") && w.contains("compose.yaml:2:1")),
        "{:?}",
        l.warnings
    );
    let web = &p.services["web"];
    assert_eq!(web.image, "registry.example:5000/shop/web:1.36");
    assert_eq!(web.restart.as_deref(), Some("unless-stopped"));
    assert_eq!(web.labels["team"], "web");
    assert_eq!(web.command.as_ref().unwrap()[2], "daemon off;");
    assert_eq!(web.environment["MODE"], "prod");
    assert_eq!(web.ports.len(), 5);
    assert_eq!(web.ports[1].host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(web.ports[3].host_port, Some(9001));
    assert_eq!(web.ports[3].protocol, Protocol::Udp);
    assert_eq!(web.ports[4].host_port, Some(5353));
    assert_eq!(web.volumes[0].kind, MountType::Bind);
    assert_eq!(web.volumes[0].source, "/srv/app/./html");
    assert!(web.volumes[0].read_only);
    assert_eq!(web.volumes[1].kind, MountType::Volume);
    assert_eq!(web.volumes[2].tmpfs_size, Some(16 << 20));
    assert_eq!(web.depends_on["db"].condition, Condition::ServiceHealthy);
    assert_eq!(web.stop_grace_period_ms, Some(90_000));
    assert_eq!(web.networks.len(), 2);
    let db = &p.services["db"];
    assert_eq!(db.image, "postgres:16");
    assert_eq!(db.environment["PORT"], "5432");
    let h = db.healthcheck.as_ref().unwrap();
    assert_eq!(h.test, vec!["CMD-SHELL", "pg_isready -U postgres"]);
    assert_eq!(h.interval_ms, Some(10_000));
    assert_eq!(db.limits.memory_bytes, Some(512 << 20));
    assert_eq!(db.limits.cpus, Some(1.5));
    assert_eq!(db.limits.pids, Some(200));
    assert_eq!(db.networks["back"].aliases, vec!["database"]);
    assert_eq!(p.start_order(), vec!["db", "web"]);
}

#[test]
fn config_hash_changes_with_config_not_with_replicas() {
    let a = load_one("services:\n  w:\n    image: busybox\n    environment: {A: '1'}\n").unwrap();
    let b = load_one("services:\n  w:\n    image: busybox\n    environment: {A: '2'}\n").unwrap();
    let c = load_one("services:\n  w:\n    image: busybox\n    environment: {A: '1'}\n    deploy: {replicas: 3}\n").unwrap();
    let h = |l: &Loaded| l.project.services["w"].config_hash();
    assert_ne!(h(&a), h(&b));
    assert_eq!(h(&a), h(&c));
    assert_eq!(c.project.services["w"].replicas, 3);
}

#[test]
fn several_files_merge_as_compose_merges_them() {
    let base = "services:\n  web:\n    image: web:1\n    environment: [A=1, B=2]\n    ports: ['80:80']\n    volumes: ['/a:/data']\n    command: [a, b]\n";
    let over = "services:\n  web:\n    image: web:2\n    environment: {B: '3', C: '4'}\n    ports: ['443:443']\n    volumes: ['/b:/data']\n    command: [c]\n  extra:\n    image: x\n";
    let l = load_texts(
        vec![
            ("a.yaml".into(), base.into()),
            ("b.yaml".into(), over.into()),
        ],
        PathBuf::from("/p"),
        &opts(&[]),
    )
    .unwrap();
    let w = &l.project.services["web"];
    assert_eq!(w.image, "web:2");
    let env: BTreeMap<&str, &str> = w
        .environment
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(env, BTreeMap::from([("A", "1"), ("B", "3"), ("C", "4")]));
    assert_eq!(w.ports.len(), 2);
    assert_eq!(w.volumes.len(), 1);
    assert_eq!(w.volumes[0].source, "/b");
    assert_eq!(w.command.as_deref(), Some(&["c".to_string()][..]));
    assert!(l.project.services.contains_key("extra"));
    assert_eq!(l.project.name, "p");
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
    let y = "name: My_App!\nservices:\n  a:\n    image: x\n  dbg:\n    image: y\n    profiles: [debug]\n";
    let l = load_one(y).unwrap();
    assert_eq!(l.project.name, "my_app");
    assert!(!l.project.services.contains_key("dbg"));
    let mut o = opts(&[]);
    o.profiles = vec!["debug".into()];
    o.project_name = Some("Other".into());
    let l = load_texts(vec![("c.yaml".into(), y.into())], PathBuf::from("/p"), &o).unwrap();
    assert!(l.project.services.contains_key("dbg"));
    assert_eq!(l.project.name, "other");
}

#[test]
fn unset_variables_warn_and_required_ones_fail_with_position() {
    let l = load_one("services:\n  w:\n    image: busybox:${NOPE}\n").unwrap();
    assert!(l.warnings.iter().any(|w| w.contains("NOPE")));
    assert_eq!(
        err("services:\n  w:\n    image: x\n    environment:\n      A: ${NEED:?set NEED first}\n"),
        "compose.yaml:5:7: required variable NEED is missing a value: set NEED first"
    );
}

#[test]
fn bad_input_names_file_line_and_column() {
    assert_eq!(
        err("services:\n  web:\n    image: x\n    build: .\n"),
        "compose.yaml:4:5: service web: `build` is not supported yet: build the image elsewhere and set `image`"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    privileged: true\n"),
        "compose.yaml:4:5: service web: key `privileged` is not supported by berth"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    depends_on: [db]\n"),
        "compose.yaml:4:5: service web depends on unknown service db"
    );
    assert_eq!(
        err("services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n"),
        "compose.yaml:4:5: dependency cycle: a -> b -> a"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    stop_grace_period: 10 minutes\n"),
        "compose.yaml:4:5: stop_grace_period: invalid duration \"10 minutes\": unknown unit \" minutes\" (use us, ms, s, m, h)"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    deploy:\n      resources:\n        limits:\n          memory: lots\n"),
        "compose.yaml:7:11: invalid size \"lots\": expected a number like 512m or 1g"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    ports:\n      - \"80:80\"\n      - \"8080:99999\"\n"),
        "compose.yaml:6:7: ports: \"8080:99999\": \"99999\" is not a port number"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    restart: sometimes\n"),
        "compose.yaml:4:5: restart \"sometimes\": expected no, always, unless-stopped or on-failure[:max]"
    );
    assert_eq!(
        err("services:\n  web:\n    command: x\n"),
        "compose.yaml:2:3: service web has no `image`"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    volumes: ['data:/d']\n"),
        "compose.yaml:4:5: volumes: named volume \"data\" is not declared under the top-level `volumes`"
    );
    assert_eq!(
        err("services:\n  web:\n    image: x\n    read_only: maybe\n"),
        "compose.yaml:4:5: `read_only` must be true or false"
    );
    assert_eq!(
        err("secrets:\n  s: {}\nservices:\n  web:\n    image: x\n"),
        "compose.yaml:1:1: top-level key `secrets` is not supported by berth"
    );
}

#[test]
fn yaml_errors_carry_the_parser_position() {
    let e = err("services:\n  web:\n    image: x\n    image: y\n");
    assert!(e.starts_with("compose.yaml:4:"), "{e}");
    assert!(e.to_lowercase().contains("duplicate"), "{e}");
    let e = err("services:\n  web: [unclosed\n");
    assert!(e.starts_with("compose.yaml:"), "{e}");
    assert!(e.contains("invalid YAML"), "{e}");
    assert_eq!(
        err("- a\n- b\n"),
        "compose.yaml:1:1: a compose file must be a mapping with a `services` key"
    );
}

#[test]
fn unsupported_keys_can_be_downgraded_to_warnings() {
    let mut o = opts(&[]);
    o.allow_unsupported = true;
    let l = load_texts(
        vec![(
            "c.yaml".into(),
            "services:\n  web:\n    image: x\n    privileged: true\n    build: .\n".into(),
        )],
        PathBuf::from("/p"),
        &o,
    )
    .unwrap();
    assert_eq!(l.warnings.len(), 2, "{:?}", l.warnings);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("c.yaml:4:5") && w.contains("privileged")),
        "{:?}",
        l.warnings
    );
}

#[test]
fn alias_bombs_and_huge_inputs_are_refused() {
    let mut bomb = String::from("a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n");
    let names = ["b", "c", "d", "e", "f", "g", "h", "i", "j"];
    let mut prev = "a";
    for n in names {
        bomb.push_str(&format!(
            "{n}: &{n} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = n;
    }
    bomb.push_str("services:\n  w:\n    image: x\n");
    let t = std::time::Instant::now();
    let e = err(&bomb);
    assert!(e.contains("invalid YAML"), "{e}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));

    let dir = std::env::temp_dir().join(format!("berth-spec-big-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("compose.yaml");
    std::fs::write(&f, "x".repeat(berth_spec::load::MAX_FILE_BYTES + 1)).unwrap();
    let e = load(&LoadOptions {
        files: vec![f],
        ..Default::default()
    })
    .unwrap_err();
    assert!(e.to_string().contains("refuses spec files over"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn env_file_and_dot_env() {
    let dir = std::env::temp_dir().join(format!("berth-spec-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "TAG=from-dotenv\n").unwrap();
    std::fs::write(dir.join("app.env"), "A=1\nB=2\n").unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        "services:\n  w:\n    image: busybox:${TAG}\n    env_file: app.env\n    environment: {B: '3'}\n",
    )
    .unwrap();
    let l = load(&LoadOptions {
        files: vec![dir.join("compose.yaml")],
        env: Some(BTreeMap::new()),
        ..Default::default()
    })
    .unwrap();
    let w = &l.project.services["w"];
    assert_eq!(w.image, "busybox:from-dotenv");
    assert_eq!(w.environment["A"], "1");
    assert_eq!(w.environment["B"], "3");
    std::fs::remove_dir_all(&dir).unwrap();
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
                ..Default::default()
            })
            .unwrap_or_else(|e| panic!("{e}"));
            assert!(!l.project.services.is_empty(), "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 2);
}

#[test]
fn yaml_1_2_booleans_as_compose_reads_them() {
    let l =
        load_one("services:\n  w:\n    image: y\n    restart: no\n    read_only: true\n").unwrap();
    let w = &l.project.services["w"];
    assert_eq!(w.image, "y");
    assert_eq!(w.restart.as_deref(), Some("no"));
    assert!(w.read_only);
}

#[test]
fn x_berth_rootfs_runs_a_directory() {
    let l = load_one("services:\n  w:\n    x-berth:\n      rootfs: ./root\n").unwrap();
    assert_eq!(
        l.project.services["w"].rootfs.as_deref(),
        Some("/srv/app/./root")
    );
    assert_eq!(
        err("services:\n  w:\n    x-berth:\n      nodes: [a]\n"),
        "compose.yaml:4:7: x-berth.nodes is not a berth extension (rootfs)"
    );
}
