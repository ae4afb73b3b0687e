//! The Dockerfile and the docker compose stack: the image is built from the locked release
//! binary, stripped, run by a user and checks its own readiness; compose runs the stack
//! from files in the repository, in the right order, built once.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::{HEALTHCHECK_TIMEOUT, repo};

use super::{COMPOSE, DASHBOARD_PROVIDERS, JOB, PROMETHEUS_CONFIG, read, yaml};

fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map
            .iter()
            .map(|(key, value)| {
                let text = match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                };
                (key.clone(), text)
            })
            .collect(),
        Value::Array(list) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|entry| {
                let (key, value) = entry.split_once('=').unwrap_or((entry, ""));
                (key.to_owned(), value.to_owned())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// (host path, container path) of a service's bind mounts.
fn bind_mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| match volume {
            Value::String(short) => {
                let mut parts = short.split(':');
                let source = parts.next()?.to_owned();
                let target = parts.next()?.to_owned();
                Some((source, target))
            }
            Value::Object(long) if long["type"] == "bind" => Some((
                long["source"].as_str()?.to_owned(),
                long["target"].as_str()?.to_owned(),
            )),
            _ => None,
        })
        .filter(|(source, _)| source.starts_with('.') || source.starts_with('/'))
        .collect()
}

fn command_words(service: &Value) -> Vec<String> {
    match &service["command"] {
        Value::Array(words) => words
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Value::String(line) => line.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

fn depends_on(service: &Value, on: &str) -> Option<String> {
    match &service["depends_on"] {
        Value::Object(map) => map.get(on).map(|dependency| {
            dependency["condition"]
                .as_str()
                .unwrap_or("service_started")
                .to_owned()
        }),
        Value::Array(list) => list
            .iter()
            .any(|name| name == on)
            .then(|| "service_started".to_owned()),
        _ => None,
    }
}

#[test]
fn docker_compose_runs_the_stack_from_files_in_the_repo_in_the_right_order() {
    let compose = yaml(COMPOSE);
    let services = compose["services"].as_object().expect("services");
    for required in [
        "localstack",
        "postgres",
        "setup",
        "sqs2pg",
        "sender",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(required), "no service {required}");
    }
    for (name, service) in services {
        for (source, _) in bind_mounts(service) {
            assert!(
                !source.starts_with('/'),
                "{name} mounts the absolute host path {source}"
            );
            assert!(
                repo().join(&source).exists(),
                "{name} mounts {source}, which is not in the repo"
            );
        }
        if let Some(build) = service.get("build") {
            let context = build
                .as_str()
                .or_else(|| build["context"].as_str())
                .expect("build context");
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            assert!(
                repo().join(context).join(dockerfile).is_file(),
                "{name} builds {context}/{dockerfile}, which does not exist"
            );
        } else {
            let image = service["image"].as_str().expect("an image or a build");
            let tag = image.rsplit_once(':').map(|(_, tag)| tag).unwrap_or("");
            assert!(
                !tag.is_empty() && tag != "latest" && !tag.contains('/'),
                "{name}: pin a version of {image}"
            );
        }
        if let Some(dependencies) = service["depends_on"].as_object() {
            for (dependency, how) in dependencies {
                let target = services
                    .get(dependency)
                    .unwrap_or_else(|| panic!("{name} depends on an unknown {dependency}"));
                if how["condition"] == "service_healthy" {
                    assert!(
                        target.get("healthcheck").is_some(),
                        "{name} waits for {dependency} to be healthy, which has no healthcheck"
                    );
                }
            }
        }
    }
    let service = |name: &str| &services[name];
    let condition = |name: &str, on: &str| depends_on(service(name), on);
    let healthy = Some("service_healthy".to_owned());
    let completed = Some("service_completed_successfully".to_owned());
    assert_eq!(condition("setup", "localstack"), healthy);
    assert_eq!(condition("sqs2pg", "localstack"), healthy);
    assert_eq!(condition("sqs2pg", "postgres"), healthy);
    assert_eq!(condition("sqs2pg", "setup"), completed);
    assert_eq!(condition("sender", "setup"), completed);
    assert_eq!(
        service("localstack")["image"],
        "localstack/localstack:4.9.2"
    );
    assert_eq!(service("postgres")["image"], "postgres:15");
    assert!(
        service("postgres")["healthcheck"]["test"]
            .to_string()
            .contains("pg_isready")
    );
    assert!(
        service("localstack")["healthcheck"]["test"]
            .to_string()
            .contains("/_localstack/health")
    );

    // The queue that setup creates is the one the consumer reads and the sender fills.
    let setup = command_words(service("setup"));
    assert_eq!(setup.first().map(String::as_str), Some("setup"));
    let queue_name = setup
        .iter()
        .position(|word| word == "--queue-name")
        .map(|i| setup[i + 1].clone())
        .unwrap_or_else(|| "user-logins".to_owned());
    let consumer = environment(service("sqs2pg"));
    let queue_url = &consumer["SQS2PG_QUEUE_URL"];
    assert_eq!(
        queue_url,
        &format!("http://localstack:4566/000000000000/{queue_name}")
    );
    assert_eq!(
        &environment(service("sender"))["SQS2PG_QUEUE_URL"],
        queue_url
    );
    let sender = command_words(service("sender"));
    assert_eq!(sender.first().map(String::as_str), Some("send"));
    assert!(sender.contains(&"--count".to_owned()));
    assert!(
        command_words(service("sqs2pg")).is_empty() || command_words(service("sqs2pg")) == ["run"],
        "the consumer runs `sqs2pg run`"
    );
    for one_shot in ["setup", "sqs2pg", "sender"] {
        let env = environment(service(one_shot));
        assert_eq!(
            env["AWS_ENDPOINT_URL"], "http://localstack:4566",
            "{one_shot}"
        );
        assert!(
            env.contains_key("AWS_REGION"),
            "{one_shot} has no AWS_REGION"
        );
    }
    assert!(consumer["DATABASE_URL"].contains("@postgres:5432/"));
    let key = &consumer["SQS2PG_HMAC_KEY"];
    assert!(
        key.len() >= 16 && key.contains("demo"),
        "the HMAC key must be a clearly marked demo value"
    );

    // Prometheus scrapes the consumer where it listens, with the job name the rules use.
    let metrics_port = consumer["SQS2PG_METRICS_ADDR"]
        .strip_prefix("0.0.0.0:")
        .expect("metrics on 0.0.0.0 in a container")
        .to_owned();
    let config = yaml(PROMETHEUS_CONFIG);
    let job = config["scrape_configs"]
        .as_array()
        .expect("scrape_configs")
        .iter()
        .find(|job| job["job_name"] == JOB)
        .expect("a scrape job named sqs2pg");
    let targets = &job["static_configs"][0]["targets"];
    assert_eq!(
        targets,
        &serde_json::json!([format!("sqs2pg:{metrics_port}")])
    );
    assert_eq!(job["scrape_interval"], "5s");
    assert!(
        config["rule_files"]
            .as_array()
            .expect("rule_files")
            .iter()
            .all(|file| repo()
                .join("dashboards/prometheus")
                .join(file.as_str().unwrap())
                .is_file()),
        "a rule file of {PROMETHEUS_CONFIG} is missing"
    );
    let prometheus = service("prometheus");
    assert!(
        bind_mounts(prometheus).contains(&(
            "./dashboards/prometheus".to_owned(),
            "/etc/prometheus".to_owned()
        )),
        "prometheus must mount dashboards/prometheus at /etc/prometheus"
    );
    assert!(
        command_words(prometheus).contains(&"--config.file=/etc/prometheus/prometheus.yml".into())
    );

    // Grafana finds its provisioning, the dashboard and Prometheus.
    let grafana = service("grafana");
    let mounts = bind_mounts(grafana);
    assert!(mounts.contains(&(
        "./dashboards/provisioning".to_owned(),
        "/etc/grafana/provisioning".to_owned()
    )));
    let dashboard_mount = mounts
        .iter()
        .find(|(source, _)| source == "./dashboards/sqs2pg.json")
        .expect("grafana mounts the dashboard");
    let providers = yaml(DASHBOARD_PROVIDERS);
    let folder = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    assert_eq!(
        Path::new(&dashboard_mount.1).parent(),
        Some(Path::new(folder)),
        "the dashboard is mounted outside the provider's folder"
    );
    assert_eq!(folder, "/var/lib/grafana/dashboards");
    let grafana_env = environment(grafana);
    assert_eq!(grafana_env["GF_AUTH_ANONYMOUS_ENABLED"], "true");
    assert_eq!(grafana_env["GF_AUTH_ANONYMOUS_ORG_ROLE"], "Viewer");
    println!(
        "{} services, every mount and build context present",
        services.len()
    );
}

/// The arguments of every `keyword` instruction, in order.
fn arguments_of(instructions: &[(String, String)], keyword: &str) -> Vec<String> {
    instructions
        .iter()
        .filter(|(k, _)| k == keyword)
        .map(|(_, rest)| rest.clone())
        .collect()
}

/// Dockerfile instructions, continuation lines joined and comments dropped.
fn dockerfile_instructions() -> Vec<(String, String)> {
    let text = read("Dockerfile");
    let mut instructions = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        if let Some(part) = trimmed.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (keyword, rest) = current.split_once(' ').unwrap_or((&current, ""));
        instructions.push((keyword.to_ascii_uppercase(), rest.trim().to_owned()));
        current.clear();
    }
    instructions
}

#[test]
fn the_dockerfile_builds_the_locked_release_binary_into_a_slim_image_run_by_a_user() {
    let instructions = dockerfile_instructions();
    let all = |keyword: &str| arguments_of(&instructions, keyword);
    let froms = all("FROM");
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    assert!(froms[0].starts_with("rust:1.95-bookworm"), "{froms:?}");
    assert_eq!(froms[1], "debian:bookworm-slim");
    let runs = all("RUN").join("\n");
    assert!(runs.contains("cargo build --release --locked"), "{runs}");
    assert!(runs.contains("ca-certificates"), "{runs}");
    let user = all("USER");
    assert_eq!(user.len(), 1);
    assert!(!user[0].starts_with("root") && !user[0].starts_with('0'));
    assert_eq!(all("EXPOSE"), ["9898"]);
    assert_eq!(all("ENTRYPOINT"), [r#"["sqs2pg"]"#]);
    assert_eq!(all("CMD"), [r#"["run"]"#]);

    // What the build copies exists, is not ignored, and is all the crate needs.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect();
    for wanted in ["target", ".run", "fuzz/target", ".git"] {
        assert!(
            ignored.iter().any(|i| i == wanted),
            ".dockerignore lacks {wanted}"
        );
    }
    let mut copied = BTreeSet::new();
    for copy in all("COPY") {
        if copy.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = copy.split_whitespace().collect();
        for source in &words[..words.len() - 1] {
            assert!(
                repo().join(source).exists(),
                "COPY {source}: not in the repo"
            );
            assert!(
                !ignored.iter().any(|i| i == source),
                "COPY {source}: excluded by .dockerignore"
            );
            copied.insert(source.trim_end_matches('/').to_owned());
        }
    }
    for needed in ["Cargo.toml", "Cargo.lock", "src", "migrations"] {
        assert!(copied.contains(needed), "the build does not copy {needed}");
    }
    // Cargo refuses a manifest whose declared targets it cannot find, so every target that
    // `cargo build --release` looks for must be in the image too (a [[bench]] once broke
    // the build).
    for target in declared_target_paths() {
        let top = target.split('/').next().unwrap();
        assert!(
            copied.contains(top) || copied.contains(target.as_str()),
            "Cargo.toml declares {target}, which the Dockerfile does not copy"
        );
    }
}

/// Source paths that `cargo build --release` looks for among the targets Cargo.toml
/// declares: every [[bin]]'s, and every [[bench]]'s, [[test]]'s and [[example]]'s whose path
/// Cargo infers from the default layout (it checks those as it reads the manifest). A test,
/// bench or example with an explicit `path` is only read when it is built, so the image
/// needs no `tests/` for `[[test]] path = "tests/api/main.rs"`.
fn declared_target_paths() -> Vec<String> {
    let mut paths = Vec::new();
    let mut section = String::new();
    let mut name = None;
    let mut path = None;
    let mut flush = |section: &str, name: &mut Option<String>, path: &mut Option<String>| {
        let default_dir = match section {
            "[[bin]]" => "src/bin",
            "[[bench]]" => "benches",
            "[[test]]" => "tests",
            "[[example]]" => "examples",
            _ => return,
        };
        match (path.take(), name.take()) {
            (Some(path), _) if section == "[[bin]]" => paths.push(path),
            (Some(_), _) => {}
            (None, Some(name)) => paths.push(format!("{default_dir}/{name}.rs")),
            (None, None) => {}
        }
    };
    for line in read("Cargo.toml").lines().map(str::trim) {
        if line.starts_with('[') {
            flush(&section, &mut name, &mut path);
            section = line.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            let value = value.trim().trim_matches('"').to_owned();
            match key.trim() {
                "name" => name = Some(value),
                "path" => path = Some(value),
                _ => {}
            }
        }
    }
    flush(&section, &mut name, &mut path);
    assert!(
        paths.iter().any(|p| p == "src/main.rs"),
        "found the [[bin]]: {paths:?}"
    );
    paths
}

/// The image ships a stripped binary and checks its own readiness with it; compose builds
/// that image once and waits on the check.
#[test]
fn the_image_is_built_once_ships_a_stripped_binary_and_checks_its_own_readiness() {
    let instructions = dockerfile_instructions();
    let all = |keyword: &str| arguments_of(&instructions, keyword);
    // Where the runtime stage puts the binary.
    let copied: Vec<String> = all("COPY")
        .into_iter()
        .filter(|copy| copy.starts_with("--from=builder"))
        .collect();
    assert_eq!(copied.len(), 1, "{copied:?}");
    let words: Vec<&str> = copied[0].split_whitespace().collect();
    let (built, installed) = (words[1], words[2]);
    assert_eq!(built, installed, "{copied:?}");
    // The build stage writes it with objcopy from the release binary, without debug info.
    let runs = all("RUN").join("\n");
    let strip = "objcopy --strip-debug";
    let build = runs.find("cargo build --release").expect("a release build");
    let stripped = runs[build..].find(strip).expect("the binary is stripped");
    assert!(
        runs[build + stripped..].contains(&format!("target/release/sqs2pg {installed}")),
        "the stripped copy is not what the runtime stage copies: {runs}"
    );

    let healthchecks = all("HEALTHCHECK");
    assert_eq!(healthchecks.len(), 1, "{healthchecks:?}");
    let (options, command) = healthchecks[0]
        .split_once("CMD ")
        .expect("HEALTHCHECK … CMD [...]");
    let command: Vec<String> = serde_json::from_str(command.trim())
        .unwrap_or_else(|error| panic!("the HEALTHCHECK CMD is not exec form: {error}"));
    assert_eq!(command, [installed, "healthcheck"]);
    // Longer than the check's own 2 s timeout, so a hung instance fails as "not ready".
    assert!(options.contains("--timeout=5s"), "{options}");
    assert!(
        HEALTHCHECK_TIMEOUT < Duration::from_secs(5),
        "the check's own timeout must undercut Docker's"
    );
    // `healthcheck` finds the server where the image makes it listen.
    let envs = all("ENV").join("\n");
    assert!(envs.contains("SQS2PG_METRICS_ADDR=0.0.0.0:9898"), "{envs}");

    let compose = yaml(COMPOSE);
    let services = compose["services"].as_object().expect("services");
    let builders: Vec<&String> = services
        .iter()
        .filter(|(_, service)| service.get("build").is_some())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(
        builders.len(),
        1,
        "one service builds the image: {builders:?}"
    );
    for name in ["setup", "sqs2pg", "sender"] {
        assert_eq!(services[name]["image"], "sqs2pg:local", "{name}");
    }
    assert_eq!(services[builders[0].as_str()]["image"], "sqs2pg:local");
    let check = &services["sqs2pg"]["healthcheck"]["test"];
    assert_eq!(
        check,
        &serde_json::json!(["CMD", installed, "healthcheck"]),
        "compose's check is the image's"
    );
    assert_eq!(
        depends_on(&services["prometheus"], "sqs2pg").as_deref(),
        Some("service_healthy")
    );
    // Whatever waits on sqs2pg waits for it to be ready, not merely started.
    for (name, service) in services {
        if let Some(condition) = depends_on(service, "sqs2pg") {
            assert_eq!(condition, "service_healthy", "{name}");
        }
    }
    println!(
        "image: {installed}, stripped; HEALTHCHECK {command:?}; built once by {}",
        builders[0]
    );
}
