//! The alerts and the dashboard in `config/monitoring/` use only metrics and labels the code
//! exports: every metric name in a PrometheusRule expression or a dashboard query is looked up
//! in the `/metrics` text the real `Metrics` registry renders, so renaming a metric (or a label)
//! breaks this test instead of silently breaking an alert.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use imageposture::core::posture::Posture;
use imageposture::metrics::Metrics;
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/monitoring")
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde_json::to_value(serde_yaml::Value::deserialize(d).unwrap()).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// Sample names and the label names each carries, from the exposition of a registry in which
/// every labelled family has recorded one series.
fn exported() -> BTreeMap<String, BTreeSet<String>> {
    let m = Metrics::new();
    m.verification(Posture::Signed);
    m.registry_request("ghcr.io", 200);
    m.api_write("apply");
    let text = m.encode();
    let mut samples: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut typed = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            typed.push(rest.split(' ').next().unwrap().to_string());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let end = line.find(['{', ' ']).unwrap();
        let labels = samples.entry(line[..end].to_string()).or_default();
        if line[end..].starts_with('{') {
            let close = line.find('}').unwrap();
            for pair in line[end + 1..close].split(',') {
                labels.insert(pair.split('=').next().unwrap().to_string());
            }
        }
    }
    // Every family really was populated, so a family that renders nothing cannot hide here.
    for family in &typed {
        assert!(
            samples.keys().any(|s| s.starts_with(family.as_str())),
            "{family} has no sample in\n{text}"
        );
    }
    assert!(samples.len() >= 10, "{samples:?}");
    samples
}

/// Labels Prometheus attaches to every scraped series (target labels), usable in `on(...)`.
const TARGET_LABELS: [&str; 6] = ["instance", "job", "namespace", "pod", "service", "endpoint"];

/// What one expression refers to.
#[derive(Debug, Default, PartialEq, Eq)]
struct Refs {
    /// Metric names.
    metrics: BTreeSet<String>,
    /// (metric, label, operator, value) of every label matcher.
    matchers: Vec<(String, String, String, String)>,
    /// Labels named in `by`, `without`, `on`, `ignoring`, `group_left/right` lists.
    grouping: BTreeSet<String>,
    /// Grafana variables (`$name`, `${name}`).
    variables: BTreeSet<String>,
}

const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// A small PromQL scan (no full parser): strings, label matchers, ranges, numbers, variables,
/// functions, aggregations and keywords are taken apart; every other identifier is a metric.
/// Grafana's `label_values(metric, label)` is understood too.
fn scan(expr: &str) -> Refs {
    let mut refs = Refs::default();
    if let Some(args) = expr
        .trim()
        .strip_prefix("label_values(")
        .and_then(|a| a.strip_suffix(')'))
    {
        let (metric, label) = args.split_once(',').unwrap();
        let inner = scan(metric);
        refs.metrics = inner.metrics;
        refs.matchers = inner.matchers;
        refs.grouping.insert(label.trim().to_string());
        return refs;
    }
    let chars: Vec<char> = expr.chars().collect();
    // Grafana variables may sit anywhere, label values and ranges included.
    for (at, _) in expr.match_indices('$') {
        let name: String = expr[at + 1..]
            .trim_start_matches('{')
            .chars()
            .take_while(|&c| is_ident(c))
            .collect();
        refs.variables.insert(name);
    }
    let mut i = 0;
    let mut last_metric: Option<String> = None;
    let skip_ws = |mut j: usize| {
        while j < chars.len() && chars[j].is_whitespace() {
            j += 1;
        }
        j
    };
    let read_while = |j: usize, f: &dyn Fn(char) -> bool| {
        let mut k = j;
        while k < chars.len() && f(chars[k]) {
            k += 1;
        }
        (chars[j..k].iter().collect::<String>(), k)
    };
    let read_string = |j: usize| {
        let quote = chars[j];
        let mut k = j + 1;
        let mut s = String::new();
        while k < chars.len() && chars[k] != quote {
            if chars[k] == '\\' {
                k += 1;
            }
            s.push(chars[k]);
            k += 1;
        }
        (s, k + 1)
    };
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            i = read_string(i).1;
        } else if c == '$' {
            let j = if chars.get(i + 1) == Some(&'{') {
                i + 2
            } else {
                i + 1
            };
            let k = read_while(j, &is_ident).1;
            i = if chars.get(k) == Some(&'}') { k + 1 } else { k };
        } else if c == '{' {
            // Label matchers of the metric just read: label op "value", ...
            let mut j = i + 1;
            loop {
                j = skip_ws(j);
                if j >= chars.len() || chars[j] == '}' {
                    break;
                }
                let (label, k) = read_while(j, &is_ident);
                let (op, k) = read_while(skip_ws(k), &|c| "=!~".contains(c));
                let k = skip_ws(k);
                let (value, k) = read_string(k);
                let metric = last_metric.clone().unwrap_or_default();
                refs.matchers.push((metric, label, op, value));
                j = skip_ws(k);
                if chars.get(j) == Some(&',') {
                    j += 1;
                }
            }
            i = j + 1;
        } else if c == '[' {
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            i = read_while(i, &|c| c.is_ascii_alphanumeric() || c == '.').1;
        } else if is_ident_start(c) {
            let (word, k) = read_while(i, &is_ident);
            let next = skip_ws(k);
            let lower = word.to_ascii_lowercase();
            if GROUPING.contains(&lower.as_str()) {
                i = next;
                if chars.get(i) == Some(&'(') {
                    let close = i + chars[i..].iter().position(|&c| c == ')').unwrap();
                    let list: String = chars[i + 1..close].iter().collect();
                    refs.grouping.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(String::from),
                    );
                    i = close + 1;
                }
                continue;
            }
            i = k;
            if chars.get(next) == Some(&'(')
                || AGGREGATIONS.contains(&lower.as_str())
                || KEYWORDS.contains(&lower.as_str())
            {
                last_metric = None;
                continue;
            }
            refs.metrics.insert(word.clone());
            last_metric = Some(word);
        } else {
            if c != '{' && !c.is_whitespace() {
                last_metric = None;
            }
            i += 1;
        }
    }
    refs
}

/// Every expression of the PrometheusRule: (alert name, expr).
fn rule_expressions() -> Vec<(String, String)> {
    let docs = yaml_documents(&root().join("prometheus_rule.yaml"));
    assert_eq!(docs.len(), 1);
    let rule = &docs[0];
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    let mut out = Vec::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        assert!(group["name"].is_string());
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"]
                .as_str()
                .expect("every rule is an alert")
                .to_string();
            assert!(
                ["critical", "warning", "info"]
                    .contains(&r["labels"]["severity"].as_str().unwrap()),
                "{name}: severity"
            );
            assert!(r["annotations"]["summary"].is_string(), "{name}: summary");
            assert!(
                r["annotations"]["description"].is_string(),
                "{name}: description"
            );
            out.push((name, r["expr"].as_str().unwrap().trim().to_string()));
        }
    }
    out
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(root().join("dashboard.json")).unwrap()).unwrap()
}

/// Every query of the dashboard: (where, expr).
fn dashboard_expressions(dash: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in dash["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            out.push((
                format!("panel {title:?}"),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if v["type"] == "query" {
            let q = v["query"]["query"]
                .as_str()
                .or(v["query"].as_str())
                .unwrap();
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// Problems with one expression, against what the code exports.
fn check(
    place: &str,
    expr: &str,
    exported: &BTreeMap<String, BTreeSet<String>>,
    variables: &BTreeSet<String>,
) -> Vec<String> {
    let refs = scan(expr);
    let mut problems = Vec::new();
    if refs.metrics.is_empty() {
        problems.push(format!("{place}: no metric found in {expr:?}"));
    }
    for m in &refs.metrics {
        if !exported.contains_key(m) {
            problems.push(format!(
                "{place}: {m} is not exported by the code ({expr:?})"
            ));
        }
    }
    let all_labels: BTreeSet<&str> = exported
        .values()
        .flatten()
        .map(String::as_str)
        .chain(TARGET_LABELS)
        .collect();
    let postures = [
        Posture::Signed,
        Posture::InvalidSignature,
        Posture::NotSigned,
        Posture::Checking,
    ]
    .map(Posture::as_str);
    for (metric, label, op, value) in &refs.matchers {
        match exported.get(metric) {
            Some(labels) if !labels.contains(label) => problems.push(format!(
                "{place}: {metric} has no label {label:?} (has {labels:?})"
            )),
            None if !metric.is_empty() => {}
            _ => {}
        }
        if ["posture", "result"].contains(&label.as_str())
            && op == "="
            && !postures.contains(&value.as_str())
        {
            problems.push(format!("{place}: {label}={value:?} is not a posture"));
        }
    }
    for g in &refs.grouping {
        if !all_labels.contains(g.as_str()) {
            problems.push(format!("{place}: groups by {g:?}, which no metric carries"));
        }
    }
    for v in &refs.variables {
        if !v.starts_with("__") && !variables.contains(v) {
            problems.push(format!("{place}: undefined variable ${v}"));
        }
    }
    problems
}

#[test]
fn scanner_finds_metrics_labels_and_nothing_else() {
    let refs = scan(
        r#"sum by (code) (rate(foo_total{registry=~"$registry", code!="a,b}"}[5m] offset 1h)) / on(instance) group_left() bar:ratio > 0.5e3 and max(baz) unless histogram_quantile(0.9, sum by (le) (rate(q_bucket[$__rate_interval])))"#,
    );
    assert_eq!(
        refs.metrics,
        ["bar:ratio", "baz", "foo_total", "q_bucket"]
            .map(String::from)
            .into()
    );
    assert_eq!(
        refs.matchers,
        vec![
            (
                "foo_total".into(),
                "registry".into(),
                "=~".into(),
                "$registry".into()
            ),
            (
                "foo_total".into(),
                "code".into(),
                "!=".into(),
                "a,b}".into()
            ),
        ]
    );
    assert_eq!(
        refs.grouping,
        ["code", "instance", "le"].map(String::from).into()
    );
    assert_eq!(
        refs.variables,
        ["__rate_interval", "registry"].map(String::from).into()
    );
    let refs = scan("label_values(imageposture_registry_requests_total, registry)");
    assert_eq!(
        refs.metrics,
        ["imageposture_registry_requests_total".to_string()].into()
    );
    assert_eq!(refs.grouping, ["registry".to_string()].into());
    assert_eq!(
        scan("sum(rate(x[5m])) by (a)").grouping,
        ["a".to_string()].into()
    );
}

/// The check can fail: a renamed metric, a renamed label, a wrong posture value are caught.
#[test]
fn check_catches_renames() {
    let exported = exported();
    let none = BTreeSet::new();
    assert!(check("ok", "max(imageposture_leader) < 1", &exported, &none).is_empty());
    for bad in [
        "max(imageposture_images_total) > 0",
        "sum(rate(imageposture_verifications{result=\"checking\"}[5m]))",
        "imageposture_images{state=\"checking\"} > 0",
        "imageposture_images{posture=\"unsigned\"} > 0",
        "sum by (host) (rate(imageposture_registry_requests_total[5m]))",
        "rate(imageposture_registry_requests_total{registry=~\"$nope\"}[5m])",
    ] {
        assert!(
            !check("bad", bad, &exported, &none).is_empty(),
            "{bad} passed"
        );
    }
}

#[test]
fn alert_rules_use_exported_metrics() {
    let exported = exported();
    let rules = rule_expressions();
    let names: BTreeSet<&str> = rules.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), rules.len(), "alert names are unique");
    // What the issue asks to alert on.
    for want in [
        "ImagePostureInvalidSignature",
        "ImagePostureCheckingStuck",
        "ImagePostureVerificationErrors",
        "ImagePostureNoLeader",
        "ImagePostureNotReady",
    ] {
        assert!(names.contains(want), "missing alert {want}");
    }
    let problems: Vec<String> = rules
        .iter()
        .flat_map(|(name, expr)| check(name, expr, &exported, &BTreeSet::new()))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn dashboard_uses_exported_metrics_and_defined_variables() {
    let exported = exported();
    let dash = dashboard();
    assert_eq!(dash["uid"], "imageposture");
    let variables: BTreeSet<String> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    let mut ids = BTreeSet::new();
    for p in dash["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        assert!(p["gridPos"]["w"].as_u64().unwrap() > 0);
        assert_eq!(p["datasource"]["uid"], "${datasource}");
    }
    let exprs = dashboard_expressions(&dash);
    let problems: Vec<String> = exprs
        .iter()
        .flat_map(|(place, expr)| check(place, expr, &exported, &variables))
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    // What the issue asks the dashboard to show.
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    for m in [
        "imageposture_images",
        "imageposture_verification_duration_seconds_bucket",
        "imageposture_registry_requests_total",
        "imageposture_cache_hits_total",
        "imageposture_cache_misses_total",
    ] {
        assert!(scan(&all).metrics.contains(m) || all.contains(m), "{m}");
    }
}

#[test]
fn component_ships_the_rule_the_monitor_and_the_dashboard() {
    let k = &yaml_documents(&root().join("kustomization.yaml"))[0];
    assert_eq!(k["kind"], "Component");
    let resources: Vec<&str> = k["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(resources.contains(&"prometheus_rule.yaml"));
    assert!(resources.contains(&"service_monitor.yaml"));
    let generator = &k["configMapGenerator"][0];
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(generator["files"][0], "imageposture.json=dashboard.json");

    // The ServiceMonitor selects the metrics Service by its labels and port name.
    let monitor = &yaml_documents(&root().join("service_monitor.yaml"))[0];
    let service = &yaml_documents(&root().join("../manager/service.yaml"))[0];
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap()
    {
        assert_eq!(&service["metadata"]["labels"][k], v, "label {k}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // `config/default` stays installable on a cluster without the prometheus-operator CRDs.
    let default = std::fs::read_to_string(root().join("../default/kustomization.yaml")).unwrap();
    assert!(!default.contains("monitoring"), "{default}");
}

/// The alerts behave: `promtool test rules` (Prometheus' own PromQL engine, Debian package
/// `prometheus`) runs tests/promtool/alerts.yaml against the rules of the PrometheusRule, e.g. a
/// standby's stale `invalid-signature` gauge must not page, a break in `checking` resets the
/// stuck clock. Annotations are dropped for promtool (they are checked above).
#[test]
fn alerts_fire_when_they_should_under_promtool() {
    let promtool = std::env::var("IMAGEPOSTURE_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let rule = &yaml_documents(&root().join("prometheus_rule.yaml"))[0];
    let mut groups = rule["spec"]["groups"].clone();
    for g in groups.as_array_mut().unwrap() {
        for r in g["rules"].as_array_mut().unwrap() {
            r.as_object_mut().unwrap().remove("annotations");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yaml"),
        serde_yaml::to_string(&serde_json::json!({ "groups": groups })).unwrap(),
    )
    .unwrap();
    let tests = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/promtool/alerts.yaml");
    std::fs::copy(&tests, dir.path().join("alerts.yaml")).unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["test", "rules", "alerts.yaml"])
        .current_dir(dir.path())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{promtool}: {e}; install the Debian package `prometheus` (promtool), as .ci/run \
                 does, or set IMAGEPOSTURE_PROMTOOL"
            )
        });
    assert!(
        out.status.success(),
        "promtool test rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every dashboard query parses as PromQL (`promtool check rules` on them as recording rules,
/// Grafana's variables replaced by values they take).
#[test]
fn dashboard_queries_parse_under_promtool() {
    let promtool = std::env::var("IMAGEPOSTURE_PROMTOOL").unwrap_or_else(|_| "promtool".into());
    let rules: Vec<Value> = dashboard_expressions(&dashboard())
        .into_iter()
        .filter(|(place, _)| place.starts_with("panel"))
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__range", "1h")
                .replace("$registry", ".*");
            serde_json::json!({"record": format!("dashboard:query{i}"), "expr": expr})
        })
        .collect();
    assert!(rules.len() >= 10);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yaml");
    let doc = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{promtool}: {e}; install the Debian package `prometheus`"));
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
