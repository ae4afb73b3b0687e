//! The Kubernetes manifests (deploy/kubernetes/) agree with the binary: every environment
//! variable they set is one `sqs2pg run` reads, the probes and the scrape hit endpoints the
//! binary serves on the port it listens on, the grace period outlasts the shutdown timeout,
//! KEDA scales on the queue the pods consume, the PrometheusRule holds the project's alert
//! rules, and the NetworkPolicy admits only Prometheus to the metrics port and anyone to
//! every other port. Both overlays are rendered with `kubectl kustomize`, as `kubectl
//! apply -k` would. (Schema validation is scripts/kubernetes.sh's.)
//!
//! The scale-in chaos tests (several `sqs2pg run` draining one queue, some of them sent
//! SIGTERM, as a scale-in or a node drain does) are here too; they need the services of
//! `scripts/services.sh up`. The static checks need only kubectl.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use serde::Deserialize;
use serde_json::Value;

use crate::helpers::*;

const OVERLAYS: [&str; 2] = ["aws", "local"];
const ALERTS: &str = "dashboards/prometheus/alerts.yml";

/// Variables of the AWS SDK's configuration and credentials chain that the binary reads
/// through aws-config (region, endpoint, static keys, web identity for IRSA, EKS Pod
/// Identity's container credentials, profiles, retries).
const AWS_SDK_VARIABLES: &[&str] = &[
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "AWS_MAX_ATTEMPTS",
    "AWS_RETRY_MODE",
    "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT",
    "AWS_EC2_METADATA_DISABLED",
];

/// Read by the binary itself rather than through clap (app::init_tracing).
const OTHER_VARIABLES: &[&str] = &["RUST_LOG"];

/// The keys KEDA's aws-sqs-queue scaler understands (KEDA 2.20 docs).
const SQS_SCALER_KEYS: &[&str] = &[
    "queueURL",
    "queueURLFromEnv",
    "queueLength",
    "activationQueueLength",
    "awsRegion",
    "awsEndpoint",
    "identityOwner",
    "scaleOnInFlight",
    "scaleOnDelayed",
];

/// `kubectl kustomize` of an overlay, as JSON values (kubectl: `scripts/kubernetes.sh
/// install` installs it).
fn render(logs: &Logs, overlay: &str) -> Vec<Value> {
    let dir = repo().join("deploy/kubernetes/overlays").join(overlay);
    let output = Process::output(
        logs,
        Command::new("kubectl").arg("kustomize").arg(&dir),
        Duration::from_secs(60),
    );
    assert!(
        output.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    parse_all(&String::from_utf8(output.stdout).unwrap())
}

fn parse_all(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|document| Value::deserialize(document).expect("YAML"))
        .filter(|document| !document.is_null())
        .collect()
}

fn yaml_file(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml_ng::from_str(&text).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = objects.iter().filter(|o| o["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}, found {}", found.len());
    found[0]
}

fn container(objects: &[Value]) -> &Value {
    let containers = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
        .as_array()
        .expect("containers");
    containers
        .iter()
        .find(|c| c["name"] == "sqs2pg")
        .expect("a container named sqs2pg")
}

/// The container's env, name to literal value (`None` for a valueFrom).
fn env(objects: &[Value]) -> BTreeMap<String, Option<String>> {
    container(objects)["env"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|var| {
            (
                var["name"].as_str().unwrap().to_owned(),
                var["value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

fn env_value(objects: &[Value], name: &str) -> String {
    env(objects)
        .get(name)
        .cloned()
        .flatten()
        .unwrap_or_else(|| panic!("the Deployment sets no literal {name}"))
}

/// What `sqs2pg run` accepts from the environment: its arguments' `env`, the global ones,
/// and the variables read outside clap.
fn accepted_variables() -> BTreeSet<String> {
    let mut cli = Cli::command();
    cli.build();
    let run = cli.find_subcommand("run").expect("a run subcommand");
    let mut accepted: BTreeSet<String> = run
        .get_arguments()
        .chain(cli.get_arguments())
        .filter_map(|arg| arg.get_env())
        .map(|name| name.to_str().unwrap().to_owned())
        .collect();
    assert!(
        accepted.contains("SQS2PG_QUEUE_URL") && accepted.contains("SQS2PG_LOG_FORMAT"),
        "clap's env names were not found: {accepted:?}"
    );
    accepted.extend(AWS_SDK_VARIABLES.iter().map(|s| (*s).to_owned()));
    accepted.extend(OTHER_VARIABLES.iter().map(|s| (*s).to_owned()));
    accepted
}

/// `run`'s default for an option, from clap.
fn run_default(variable: &str) -> String {
    let cli = Cli::command();
    let run = cli.find_subcommand("run").unwrap();
    let arg = run
        .get_arguments()
        .find(|arg| arg.get_env().is_some_and(|name| name == variable))
        .unwrap_or_else(|| panic!("run has no {variable}"));
    arg.get_default_values()[0].to_str().unwrap().to_owned()
}

/// The setting the pods run with: the manifest's value, else the binary's default.
fn setting(objects: &[Value], variable: &str) -> String {
    env(objects)
        .get(variable)
        .cloned()
        .flatten()
        .unwrap_or_else(|| run_default(variable))
}

/// A named or numbered container port, as a number.
fn port_number(objects: &[Value], port: &Value) -> u64 {
    if let Some(number) = port.as_u64() {
        return number;
    }
    let name = port.as_str().expect("a port name or number");
    container(objects)["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["name"] == name)
        .and_then(|p| p["containerPort"].as_u64())
        .unwrap_or_else(|| panic!("no container port named {name}"))
}

#[test]
fn every_variable_the_manifests_set_is_one_the_binary_reads() {
    let test = Test::shared_blocking();
    let accepted = accepted_variables();
    for overlay in OVERLAYS {
        let objects = render(&test.logs, overlay);
        let set = env(&objects);
        let unknown: Vec<&String> = set
            .keys()
            .filter(|name| !accepted.contains(*name))
            .collect();
        assert!(
            unknown.is_empty(),
            "{overlay}: the binary reads none of {unknown:?}"
        );
        for required in ["DATABASE_URL", "SQS2PG_QUEUE_URL", "AWS_REGION"] {
            assert!(set.contains_key(required), "{overlay}: {required} unset");
        }
        // The key comes from a file, the file from a mounted Secret that has that key.
        assert!(
            !set.contains_key("SQS2PG_HMAC_KEY"),
            "{overlay}: key in env"
        );
        let key_file = env_value(&objects, "SQS2PG_HMAC_KEY_FILE");
        let (dir, file) = key_file.rsplit_once('/').unwrap();
        let mount = container(&objects)["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["mountPath"] == dir)
            .unwrap_or_else(|| panic!("{overlay}: nothing mounted at {dir}"));
        let volume = one(&objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mount's volume");
        let secret = &volume["secret"];
        assert!(secret.is_object(), "{overlay}: the key is not a Secret");
        assert!(
            secret["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|item| item["path"] == file),
            "{overlay}: the Secret projects no {file}"
        );
        // Secrets the overlay ships must hold the keys the pods read from them.
        for var in container(&objects)["env"].as_array().unwrap() {
            let reference = &var["valueFrom"]["secretKeyRef"];
            let Some(name) = reference["name"].as_str() else {
                continue;
            };
            if let Some(shipped) = objects
                .iter()
                .find(|o| o["kind"] == "Secret" && o["metadata"]["name"] == name)
            {
                let key = reference["key"].as_str().unwrap();
                assert!(
                    shipped["data"].get(key).is_some() || shipped["stringData"].get(key).is_some(),
                    "{overlay}: Secret {name} has no {key}"
                );
            }
        }
        println!(
            "{overlay}: {} variables set, all read by the binary: {:?}",
            set.len(),
            set.keys().collect::<Vec<_>>()
        );
    }
}

#[test]
fn probes_and_scrape_hit_the_binarys_endpoints_on_its_port() {
    let test = Test::shared_blocking();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    // The binary's own server, to ask whether a path exists (404) or not.
    let (addr, _server) = runtime.block_on(async {
        sqs2pg::telemetry::http::serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(sqs2pg::telemetry::metrics::Metrics::new()),
            Vec::new(),
            Arc::new(sqs2pg::telemetry::http::Readiness::default()),
            tokio_util::sync::CancellationToken::new(),
        )
        .await
        .unwrap()
    });
    let status = |path: &str| {
        runtime.block_on(async {
            reqwest::get(format!("http://{addr}{path}"))
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(status("/nonexistent"), 404, "the 404 check can fail");
    for overlay in OVERLAYS {
        let objects = render(&test.logs, overlay);
        let metrics_addr: std::net::SocketAddr =
            setting(&objects, "SQS2PG_METRICS_ADDR").parse().unwrap();
        assert!(
            metrics_addr.ip().is_unspecified(),
            "{overlay}: {metrics_addr} is out of the kubelet's reach"
        );
        let port = u64::from(metrics_addr.port());
        let container = container(&objects);
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path, "{overlay}: {probe}");
            assert_eq!(
                port_number(&objects, &get["port"]),
                port,
                "{overlay}: {probe}"
            );
            assert_ne!(status(path), 404, "{overlay}: the binary serves no {path}");
        }
        // The binary answers 200 on /healthz whenever it runs: liveness never restarts a
        // pod that is merely unready (a database outage).
        assert_eq!(status("/healthz"), 200);

        let monitor = one(&objects, "PodMonitor");
        let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
        assert_eq!(port_number(&objects, &endpoint["port"]), port);
        assert_eq!(status(endpoint["path"].as_str().unwrap_or("/metrics")), 200);
        // The job label comes from a pod label whose value is the job the rules select.
        let labels = &one(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"];
        let job_label = monitor["spec"]["jobLabel"].as_str().expect("jobLabel");
        assert_eq!(labels[job_label], "sqs2pg", "{overlay}: job label");
        assert!(
            std::fs::read_to_string(repo().join(ALERTS))
                .unwrap()
                .contains("job=\"sqs2pg\""),
            "the rules select job sqs2pg"
        );
        let selects = |selector: &Value| {
            selector["matchLabels"]
                .as_object()
                .unwrap()
                .iter()
                .all(|(key, value)| &labels[key] == value)
        };
        assert!(
            selects(&monitor["spec"]["selector"]),
            "{overlay}: PodMonitor"
        );
        assert!(
            selects(&one(&objects, "PodDisruptionBudget")["spec"]["selector"]),
            "{overlay}: PodDisruptionBudget"
        );
        let service = one(&objects, "Service");
        assert_eq!(
            port_number(&objects, &service["spec"]["ports"][0]["targetPort"]),
            port
        );
        println!("{overlay}: probes and scrape on port {port}, paths served");
    }
}

#[test]
fn the_grace_period_outlasts_the_shutdown_timeout() {
    let test = Test::shared_blocking();
    for overlay in OVERLAYS {
        let objects = render(&test.logs, overlay);
        let timeout: u64 = setting(&objects, "SQS2PG_SHUTDOWN_TIMEOUT")
            .parse()
            .unwrap();
        let grace = one(&objects, "Deployment")["spec"]["template"]["spec"]
            ["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        // The margin covers the SIGTERM's delivery and the exit after the timeout.
        assert!(
            grace >= timeout + 10,
            "{overlay}: grace {grace} s leaves no margin over SQS2PG_SHUTDOWN_TIMEOUT {timeout} s"
        );
        println!("{overlay}: grace {grace} s, shutdown timeout {timeout} s");
    }
}

#[test]
fn keda_scales_the_deployment_on_the_queue_it_consumes() {
    let test = Test::shared_blocking();
    for overlay in OVERLAYS {
        let objects = render(&test.logs, overlay);
        let deployment = one(&objects, "Deployment");
        assert!(
            deployment["spec"].get("replicas").is_none(),
            "{overlay}: replicas would fight KEDA on every apply"
        );
        let scaled = one(&objects, "ScaledObject");
        assert_eq!(
            scaled["spec"]["scaleTargetRef"]["name"],
            deployment["metadata"]["name"]
        );
        let triggers = scaled["spec"]["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1);
        let trigger = &triggers[0];
        assert_eq!(trigger["type"], "aws-sqs-queue");
        let metadata = trigger["metadata"].as_object().unwrap();
        for key in metadata.keys() {
            assert!(
                SQS_SCALER_KEYS.contains(&key.as_str()),
                "{overlay}: aws-sqs-queue has no {key}"
            );
        }
        assert_eq!(
            metadata["queueURL"],
            env_value(&objects, "SQS2PG_QUEUE_URL"),
            "{overlay}: KEDA watches another queue"
        );
        assert_eq!(metadata["awsRegion"], env_value(&objects, "AWS_REGION"));
        match env(&objects).get("AWS_ENDPOINT_URL").cloned().flatten() {
            Some(endpoint) => assert_eq!(metadata["awsEndpoint"], endpoint.as_str()),
            None => assert!(!metadata.contains_key("awsEndpoint")),
        }
        assert_eq!(metadata["scaleOnInFlight"], "true");
        // In-flight work alone (a pod's whole in-flight budget) must not add a pod, or the
        // count would feed on itself.
        let queue_length: u64 = metadata["queueLength"].as_str().unwrap().parse().unwrap();
        let in_flight: u64 = setting(&objects, "SQS2PG_IN_FLIGHT_MESSAGES")
            .parse::<u64>()
            .unwrap();
        assert!(
            queue_length > in_flight,
            "{overlay}: {queue_length} <= {in_flight}"
        );
        assert!(metadata.contains_key("activationQueueLength"));
        // Connections: every pod, plus a rollout's surge pod, within PostgreSQL's default
        // max_connections (100) less its reserved superuser slots (3).
        let max: u64 = scaled["spec"]["maxReplicaCount"].as_u64().unwrap();
        let min: u64 = scaled["spec"]["minReplicaCount"].as_u64().unwrap();
        assert!(min <= max);
        // The writers' pool, and the one connection migrations take at start.
        let per_pod = setting(&objects, "SQS2PG_WRITERS").parse::<u64>().unwrap() + 1;
        assert!(
            (max + 1) * per_pod <= 97,
            "{overlay}: {max} pods x {per_pod} connections"
        );

        let authentication = one(&objects, "TriggerAuthentication");
        assert_eq!(
            trigger["authenticationRef"]["name"],
            authentication["metadata"]["name"]
        );
        let account = one(&objects, "ServiceAccount");
        let role = &account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"];
        assert_eq!(
            deployment["spec"]["template"]["spec"]["serviceAccountName"],
            account["metadata"]["name"]
        );
        match overlay {
            "aws" => {
                assert_eq!(authentication["spec"]["podIdentity"]["provider"], "aws");
                assert!(role.as_str().unwrap().starts_with("arn:aws:iam::"));
            }
            _ => {
                assert!(authentication["spec"].get("podIdentity").is_none());
                assert!(role.is_null(), "{overlay}: no IRSA");
                for reference in authentication["spec"]["secretTargetRef"]
                    .as_array()
                    .unwrap()
                {
                    let name = &reference["name"];
                    assert!(
                        objects
                            .iter()
                            .any(|o| o["kind"] == "Secret" && &o["metadata"]["name"] == name),
                        "{overlay}: KEDA reads the missing Secret {name}"
                    );
                }
            }
        }
        println!(
            "{overlay}: KEDA scales {min}..{max} on {} (queueLength {queue_length})",
            metadata["queueURL"]
        );
    }
}

#[test]
fn the_pods_run_unprivileged_as_the_images_user_with_bounded_resources() {
    let test = Test::shared_blocking();
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let uid: u64 = dockerfile
        .split("--uid ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|uid| uid.parse().ok())
        .expect("the Dockerfile creates its user with --uid");
    for overlay in OVERLAYS {
        let objects = render(&test.logs, overlay);
        let pod = &one(&objects, "Deployment")["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(pod["securityContext"]["runAsUser"], uid);
        let container = container(&objects);
        let security = &container["securityContext"];
        assert_eq!(security["readOnlyRootFilesystem"], true);
        assert_eq!(security["allowPrivilegeEscalation"], false);
        assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));
        for bound in ["requests", "limits"] {
            for resource in ["cpu", "memory"] {
                assert!(
                    container["resources"][bound][resource].is_string(),
                    "{overlay}: no {bound}.{resource}"
                );
            }
        }
    }
}

#[test]
fn the_prometheus_rule_holds_the_projects_alert_rules() {
    let test = Test::shared_blocking();
    let alerts = yaml_file(ALERTS);
    for overlay in OVERLAYS {
        let objects = render(&test.logs, overlay);
        let rule = one(&objects, "PrometheusRule");
        assert!(
            rule["spec"]["groups"] == alerts["groups"],
            "{overlay}: the PrometheusRule differs from {ALERTS}: run scripts/kubernetes.sh prometheusrule"
        );
    }
    let count = alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| group["rules"].as_array().unwrap().len())
        .sum::<usize>();
    assert!(count > 0);
    println!("{count} rules, identical in both overlays");
}

/// Whether a label selector (matchLabels and matchExpressions) selects `labels`.
fn selects(selector: &Value, labels: &BTreeMap<&str, &str>) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .into_iter()
        .flatten()
        .all(|(key, value)| labels.get(key.as_str()).copied() == value.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|expression| {
            let value = labels.get(expression["key"].as_str().unwrap()).copied();
            let listed = || {
                expression["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|listed| value.is_some() && listed.as_str() == value)
            };
            match expression["operator"].as_str().unwrap() {
                "In" => listed(),
                "NotIn" => !listed(),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                other => panic!("no operator {other}"),
            }
        });
    by_label && by_expression
}

/// A client of the pods, for [`admits`]: a pod with its labels and its namespace's, or an
/// address that is no pod (outside the cluster, a node).
enum Peer<'a> {
    Pod {
        namespace: BTreeMap<&'a str, &'a str>,
        labels: BTreeMap<&'a str, &'a str>,
    },
    Address,
}

/// Whether the NetworkPolicy `policy` lets `peer` reach `protocol` `port` of the pods it
/// selects, as the API defines it: some rule whose ports include the port (none listed:
/// all) and whose peers include the client (none listed: all). ipBlocks are not
/// evaluated: the policy has none (checked).
fn admits(objects: &[Value], policy: &Value, peer: &Peer, protocol: &str, port: u64) -> bool {
    let own_namespace = policy["metadata"]["namespace"].as_str().unwrap();
    let port_matches = |entry: &Value| {
        entry["protocol"].as_str().unwrap_or("TCP") == protocol
            && match &entry["port"] {
                Value::Null => true,
                named_or_numbered => {
                    let first = port_number(objects, named_or_numbered);
                    let last = entry["endPort"].as_u64().unwrap_or(first);
                    (first..=last).contains(&port)
                }
            }
    };
    let peer_matches = |from: &Value| {
        assert!(
            from.get("ipBlock").is_none(),
            "ipBlocks are not evaluated here"
        );
        let Peer::Pod { namespace, labels } = peer else {
            return false;
        };
        let namespace_ok = match from.get("namespaceSelector") {
            Some(selector) => selects(selector, namespace),
            None => namespace.get("kubernetes.io/metadata.name") == Some(&own_namespace),
        };
        namespace_ok
            && from
                .get("podSelector")
                .is_none_or(|selector| selects(selector, labels))
    };
    policy["spec"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|rule| {
            let ports = rule["ports"].as_array().map_or(&[][..], Vec::as_slice);
            let from = rule["from"].as_array().map_or(&[][..], Vec::as_slice);
            (ports.is_empty() || ports.iter().any(port_matches))
                && (from.is_empty() || from.iter().any(peer_matches))
        })
}

#[test]
fn the_network_policy_admits_only_prometheus_to_the_metrics_port_and_everyone_elsewhere() {
    let test = Test::shared_blocking();
    for overlay in OVERLAYS {
        let objects = render(&test.logs, overlay);
        let policy = one(&objects, "NetworkPolicy");
        // Ingress only: the pods' own connections to SQS and PostgreSQL are untouched.
        assert_eq!(
            policy["spec"]["policyTypes"],
            serde_json::json!(["Ingress"]),
            "{overlay}"
        );
        assert!(policy["spec"].get("egress").is_none(), "{overlay}");
        let pod_labels: BTreeMap<&str, &str> =
            one(&objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str().unwrap()))
                .collect();
        assert!(
            selects(&policy["spec"]["podSelector"], &pod_labels),
            "{overlay}: the policy selects other pods than the Deployment's"
        );
        let metrics_port = u64::from(
            setting(&objects, "SQS2PG_METRICS_ADDR")
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .port(),
        );
        let namespace = policy["metadata"]["namespace"].as_str().unwrap();
        let pod = |namespace: &'static str, labels: &[(&'static str, &'static str)]| Peer::Pod {
            namespace: BTreeMap::from([("kubernetes.io/metadata.name", namespace)]),
            labels: labels.iter().copied().collect(),
        };
        let prometheus = pod(
            "monitoring",
            &[
                ("app.kubernetes.io/name", "prometheus"),
                ("prometheus", "k8s"),
            ],
        );
        let strangers = [
            (
                "a pod of the same namespace",
                pod("sqs2pg", &[("app", "curl")]),
            ),
            (
                "another sqs2pg pod",
                Peer::Pod {
                    namespace: BTreeMap::from([("kubernetes.io/metadata.name", namespace)]),
                    labels: pod_labels.clone(),
                },
            ),
            (
                "Grafana beside Prometheus",
                pod("monitoring", &[("app.kubernetes.io/name", "grafana")]),
            ),
            (
                "a Prometheus of another namespace",
                pod("default", &[("app.kubernetes.io/name", "prometheus")]),
            ),
            ("an address outside the cluster", Peer::Address),
        ];
        assert!(
            admits(&objects, policy, &prometheus, "TCP", metrics_port),
            "{overlay}: Prometheus cannot scrape"
        );
        for (who, stranger) in &strangers {
            assert!(
                !admits(&objects, policy, stranger, "TCP", metrics_port),
                "{overlay}: {who} reaches the metrics port"
            );
        }
        // Every other port, TCP and UDP, stays open to everyone.
        let (_, stranger) = &strangers[0];
        let closed: Vec<String> = (1..=65535u64)
            .flat_map(|port| [("TCP", port), ("UDP", port)])
            .filter(|&(protocol, port)| {
                (protocol, port) != ("TCP", metrics_port)
                    && !admits(&objects, policy, stranger, protocol, port)
            })
            .map(|(protocol, port)| format!("{protocol} {port}"))
            .collect();
        assert!(
            closed.is_empty(),
            "{overlay}: the policy closes {} other ports, from {:?}",
            closed.len(),
            closed.first()
        );
        println!(
            "{overlay}: port {metrics_port} admits Prometheus (namespace monitoring), not {} \
             others; every other TCP and UDP port admits all",
            strangers.len()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Scale-in and node drain: SIGTERM to some of several pods

/// What the manifests give each pod (and the binary's default).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);

/// `sqs2pg run` as a pod runs it: JSON logs, its own metrics port, the default long poll.
fn pod(logs: &Logs, name: &str, db: &TestDb, queues: &TestQueues, metrics_port: u16) -> Process {
    Process::spawn(logs, name, &mut pod_command(db, queues, metrics_port))
}

/// `sqs2pg run` as the Deployment runs it (JSON logs, the manifests' shutdown timeout).
fn pod_command(db: &TestDb, queues: &TestQueues, metrics_port: u16) -> Command {
    let mut command = sqs2pg_command();
    command
        .arg("run")
        .env("SQS2PG_METRICS_ADDR", format!("127.0.0.1:{metrics_port}"))
        .env("SQS2PG_LOG_FORMAT", "json")
        .env(
            "SQS2PG_SHUTDOWN_TIMEOUT",
            SHUTDOWN_TIMEOUT.as_secs().to_string(),
        )
        .env("RUST_LOG", "info");
    run_env(&mut command, db, queues);
    command
}

async fn wait_ready(port: u16, limit: Duration) {
    eventually(limit, "/readyz answers 200", || async move {
        reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
            .await
            .is_ok_and(|response| response.status() == 200)
    })
    .await;
}

/// Three pods drain one queue; two get SIGTERM mid-drain, as a scale-in from three to one
/// (or a node drain) does. They exit 0 within the shutdown timeout, the survivor takes over
/// what they released, and every valid event is one row, none twice, nothing left invisible.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_in_mid_drain_loses_nothing_doubles_nothing_and_strands_nothing() {
    let test = Test::alone().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, malformed) =
        sqs2pg::domain::synthetic::generate(sqs2pg::domain::synthetic::Recipe {
            count: 5_000,
            seed: 131,
            duplicate_share: 0.1,
            malformed_share: 0.01,
        });
    let ids = queues.send(&bodies).await;
    let valid: BTreeSet<String> = ids
        .iter()
        .zip(&bodies)
        .filter_map(|(id, body)| login_key(id, body))
        .collect();
    assert_eq!(ids.len() - valid.len(), malformed as usize);

    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut pods: Vec<Process> = ports
        .iter()
        .enumerate()
        .map(|(n, &port)| pod(&test.logs, &format!("pod-{}", n + 1), &db, &queues, port))
        .collect();
    let started = Instant::now();
    for &port in &ports {
        wait_ready(port, Duration::from_secs(60)).await;
    }
    // Mid-drain: a quarter of the rows in, most of the queue still to go.
    eventually(
        Duration::from_secs(120),
        "a quarter of the rows",
        || async { db.row_count().await >= (valid.len() / 4) as i64 },
    )
    .await;
    let at_signal = (db.row_count().await, queues.depth().await);
    for victim in &mut pods[..2] {
        victim.signal(Signal::SIGTERM);
    }
    let signalled = Instant::now();
    let mut exits = Vec::new();
    for victim in &mut pods[..2] {
        let status = victim.wait_within(SHUTDOWN_TIMEOUT);
        exits.push(signalled.elapsed());
        assert!(
            status.success(),
            "a terminated pod exited {status}; its stderr:\n{}",
            victim.stderr()
        );
    }
    // What the terminated pods' polls brought after the signal is processed, not handed
    // back: nothing is released.
    let released: u64 = pods[..2]
        .iter()
        .flat_map(|victim| victim.log_events("Released messages for redelivery."))
        .filter_map(|event| event["fields"]["count"].as_u64())
        .sum();

    // The survivor finishes the queue: every valid row, every poison message recorded.
    let survivor = &mut pods[2];
    eventually(
        Duration::from_secs(180),
        "all rows and dead letters",
        || async {
            db.row_count().await == valid.len() as i64
                && db.count("SELECT count(*) FROM dead_letters").await == malformed as i64
        },
    )
    .await;
    eventually(Duration::from_secs(30), "an empty source queue", || async {
        queues.source_total().await == 0
    })
    .await;
    let drained_in = started.elapsed();
    survivor.signal(Signal::SIGTERM);
    let status = survivor.wait_within(SHUTDOWN_TIMEOUT + Duration::from_secs(5));
    assert!(status.success(), "the survivor exited {status}");

    let stored = db.message_ids().await;
    let distinct: BTreeSet<&String> = stored.iter().collect();
    let after = queues.depth().await;
    println!(
        "scale-in: {} messages ({malformed} poison) on 3 pods; SIGTERM to 2 at {} rows \
         ({} visible, {} in flight); they exited 0 after {exits:.1?}, releasing {released}; \
         the survivor finished in {drained_in:.1?}; {} rows, {} distinct; queue after: \
         {} visible, {} in flight",
        ids.len(),
        at_signal.0,
        at_signal.1.visible,
        at_signal.1.in_flight,
        stored.len(),
        distinct.len(),
        after.visible,
        after.in_flight,
    );
    assert!(
        at_signal.1.visible > 0,
        "the signal came mid-drain, with messages left"
    );
    assert_eq!(distinct.len(), stored.len(), "a row twice");
    assert!(
        distinct.iter().all(|id| valid.contains(*id)),
        "a row for no valid event"
    );
    assert_eq!(distinct.len(), valid.len(), "a valid event without its row");
    assert_eq!((after.visible, after.in_flight, after.delayed), (0, 0, 0));
}

/// SIGTERM to an idle pod (empty queue, each loop in a long poll) waits out the poll, not
/// cancel it (see the next tests), so the pod exits within one `SQS2PG_WAIT_TIME`: every
/// rollout and scale-in waits on it, pod by pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_an_idle_pod_exits_0_within_one_long_poll_wait() {
    let test = Test::alone().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let port = free_port();
    let mut idle = pod(&test.logs, "idle-pod", &db, &queues, port);
    wait_ready(port, Duration::from_secs(60)).await;
    // Well into the first long poll of every loop.
    tokio::time::sleep(Duration::from_secs(2)).await;
    idle.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let status = idle.wait_within(Duration::from_secs(25));
    let took = signalled.elapsed();
    let wait = sqs2pg::pipeline::DEFAULT_WAIT_TIME;
    println!("idle SIGTERM: exited {status} after {took:.2?} (long-poll wait {wait:?})");
    assert!(status.success(), "exited {status}:\n{}", idle.stderr());
    // A margin for the release and the exit on a loaded machine, far below SQS's 20 s.
    assert!(
        took < wait + Duration::from_secs(3),
        "an idle pod took {took:.1?} to exit on SIGTERM"
    );
}

/// A pod stopped while events arrive strands none of them for the next pod. SQS keeps a
/// long poll open after its client has gone and hides what it then takes for the
/// visibility timeout (30 s): before the fix, a signal cancelled the poll after 1 s, and
/// the next pod took 30 s to see what arrived after that.
async fn a_pod_stopped_while_events_arrive_strands_none(sent_after_signal: Duration) {
    let test = Test::alone().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, _) = sqs2pg::domain::synthetic::generate(sqs2pg::domain::synthetic::Recipe {
        count: 30,
        seed: 139,
        duplicate_share: 0.0,
        malformed_share: 0.0,
    });
    let port = free_port();
    let mut first = pod(&test.logs, "first", &db, &queues, port);
    wait_ready(port, Duration::from_secs(60)).await;
    // Just before the signal: the pod ingests them, and its polls start their wait anew.
    let mut ids = queues.send(&bodies[..10]).await;
    eventually(Duration::from_secs(30), "the first ten rows", || async {
        db.row_count().await == 10
    })
    .await;
    first.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    tokio::time::sleep(sent_after_signal).await;
    ids.extend(queues.send(&bodies[10..20]).await);
    let status = first.wait_within(SHUTDOWN_TIMEOUT);
    let first_exited = signalled.elapsed();
    assert!(status.success(), "exited {status}:\n{}", first.stderr());
    // After the exit, before the next pod: no poll of the first may still take them.
    ids.extend(queues.send(&bodies[20..]).await);

    let mut next = pod(&test.logs, "next", &db, &queues, free_port());
    let started = Instant::now();
    eventually(Duration::from_secs(60), "every event's row", || async {
        db.row_count().await == 30
    })
    .await;
    let ingested_in = started.elapsed();
    next.signal(Signal::SIGTERM);
    assert!(next.wait_within(SHUTDOWN_TIMEOUT).success());
    let stopped = first.log_events("Stopped.");
    let count = |field: &str| stopped[0]["fields"][field].as_u64().unwrap();
    let (received, inserted) = (count("received"), count("inserted"));
    let stored = db.message_ids().await;
    let distinct: BTreeSet<&String> = stored.iter().collect();
    let after = queues.depth().await;
    println!(
        "stopped while events arrive (10 before the signal, 10 {sent_after_signal:?} after it, \
         10 after the exit): the first pod exited after {first_exited:.2?}, having received \
         {received} and inserted {inserted}; the next ingested the rest {ingested_in:.2?} \
         after its start; {} rows, \
         {} distinct; queue after: {} visible, {} in flight",
        stored.len(),
        distinct.len(),
        after.visible,
        after.in_flight,
    );
    // Far below the 30 s visibility timeout that a stranded message waits out; a start-up
    // (migrations, the first poll) on a loaded machine takes a few seconds.
    assert!(
        ingested_in < Duration::from_secs(15),
        "the next pod took {ingested_in:.1?}: some events were stranded"
    );
    assert_eq!(
        received, inserted,
        "what the first pod's polls brought after the signal was processed, not handed back \
         to be received again"
    );
    assert_eq!(distinct.len(), stored.len(), "a row twice");
    assert_eq!(
        distinct,
        ids.iter().collect::<BTreeSet<_>>(),
        "each event's row, none other"
    );
    assert_eq!((after.visible, after.in_flight, after.delayed), (0, 0, 0));
}

/// Events that arrive right after the signal are taken by the open poll and ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stopped_while_events_arrive_strands_none_sent_right_after_the_signal() {
    a_pod_stopped_while_events_arrive_strands_none(Duration::ZERO).await;
}

/// Events that arrive after the first second of the shutdown, when the old code had
/// cancelled the poll: the poll is still waited out, so it takes them and they are ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_stopped_while_events_arrive_strands_none_sent_seconds_after_the_signal() {
    a_pod_stopped_while_events_arrive_strands_none(Duration::from_millis(1_500)).await;
}

/// A pod killed outright (SIGKILL after the grace period, a lost node) deletes nothing it
/// had not committed: its in-flight messages come back once their visibility timeout runs
/// out, counted from their last receive or heartbeat, and another pod finishes them. This
/// measures how long that takes, with a 10 s visibility timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_pods_messages_come_back_within_the_visibility_timeout() {
    let test = Test::alone().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, _) = sqs2pg::domain::synthetic::generate(sqs2pg::domain::synthetic::Recipe {
        count: 3_000,
        seed: 137,
        duplicate_share: 0.1,
        malformed_share: 0.0,
    });
    queues.send(&bodies).await;
    let visibility = Duration::from_secs(10);
    let port = free_port();
    let mut victim = Process::spawn(
        &test.logs,
        "victim",
        pod_command(&db, &queues, port).env(
            "SQS2PG_VISIBILITY_TIMEOUT",
            visibility.as_secs().to_string(),
        ),
    );
    // Hold the table so the pod's batches wait in flight, then kill it: the kill is sure to
    // strand messages, whatever the machine's speed.
    let locker = hold_batches_in_flight(&db, &queues).await;
    victim.kill();
    let killed = Instant::now();
    locker.batch_execute("COMMIT").await.unwrap();
    let stranded = queues.depth().await.in_flight;
    eventually(
        visibility * 3,
        "the killed pod's messages visible again",
        || async { queues.depth().await.in_flight == 0 },
    )
    .await;
    let returned_after = killed.elapsed();
    println!(
        "killed pod: {stranded} messages in flight at SIGKILL, all visible again after \
         {returned_after:.1?} (visibility timeout {visibility:?})"
    );
    assert!(stranded > 0, "the kill caught messages in flight");
    assert!(
        returned_after <= visibility + Duration::from_secs(3),
        "back within the visibility timeout"
    );
    finish_on_another_pod(&test, &db, &queues, bodies.len()).await;
}

/// Waits for the first rows, then locks the table so the pod's batches wait in flight on
/// the database; returns the connection holding the lock (`COMMIT` on it lets them go).
async fn hold_batches_in_flight(db: &TestDb, queues: &TestQueues) -> tokio_postgres::Client {
    eventually(Duration::from_secs(60), "the first rows", || async {
        db.row_count().await > 200
    })
    .await;
    let locker = db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE user_logins IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "batches waiting in flight",
        || async { queues.depth().await.in_flight > 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    locker
}

/// Another pod finishes the queue: each of the `events` one row.
async fn finish_on_another_pod(test: &Test, db: &TestDb, queues: &TestQueues, events: usize) {
    let mut survivor = pod(&test.logs, "survivor", db, queues, free_port());
    eventually(Duration::from_secs(120), "every event's row", || async {
        db.row_count().await == events as i64
    })
    .await;
    survivor.signal(Signal::SIGTERM);
    assert!(survivor.wait_within(SHUTDOWN_TIMEOUT).success());
    assert_eq!(
        db.count("SELECT count(DISTINCT message_id) FROM user_logins")
            .await,
        events as i64
    );
}

/// A shutdown that cannot finish (the table locked, so its batches wait on the database)
/// exits 1 at `SQS2PG_SHUTDOWN_TIMEOUT` and hands back what it held, wherever it was (in a
/// writer, in the batcher, waiting for a writer): another pod gets it at once, not after
/// the visibility timeout as after a kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_times_out_releases_what_it_holds() {
    let test = Test::alone().await;
    let (db, queues) = tokio::join!(TestDb::create(), TestQueues::create());
    let (bodies, _) = sqs2pg::domain::synthetic::generate(sqs2pg::domain::synthetic::Recipe {
        count: 2_000,
        seed: 149,
        duplicate_share: 0.1,
        malformed_share: 0.0,
    });
    queues.send(&bodies).await;
    let timeout = Duration::from_secs(3);
    let mut stuck = Process::spawn(
        &test.logs,
        "stuck",
        pod_command(&db, &queues, free_port())
            .env("SQS2PG_SHUTDOWN_TIMEOUT", timeout.as_secs().to_string()),
    );
    let locker = hold_batches_in_flight(&db, &queues).await;
    let held = queues.depth().await.in_flight;
    stuck.signal(Signal::SIGTERM);
    let signalled = Instant::now();
    let status = stuck.wait_within(timeout + Duration::from_secs(15));
    let exited_after = signalled.elapsed();
    let after = queues.depth().await;
    let released: u64 = stuck
        .log_events("Released messages for redelivery.")
        .iter()
        .filter(|event| event["fields"]["why"] == "held at the shutdown timeout")
        .filter_map(|event| event["fields"]["count"].as_u64())
        .sum();
    locker.batch_execute("COMMIT").await.unwrap();
    println!(
        "shutdown timeout: {held} messages in flight at SIGTERM; exited {status} after \
         {exited_after:.2?} (timeout {timeout:?}), releasing {released}; then {} in flight",
        after.in_flight
    );
    assert_eq!(status.code(), Some(1), "{}", stuck.stderr_tail(20));
    assert!(held > 0 && released > 0, "the timeout caught messages held");
    assert_eq!(
        after.in_flight, 0,
        "all visible again at the exit, none left for the visibility timeout"
    );
    finish_on_another_pod(&test, &db, &queues, bodies.len()).await;
}
