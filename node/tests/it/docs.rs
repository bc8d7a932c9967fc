//! What the README tells users agrees with the code.

use std::collections::BTreeMap;

use boxoffice_api::ProblemCode;

const README: &str = include_str!("../../../README.md");

/// The README's error table: code → (status, "may have applied").
fn readme_codes() -> BTreeMap<String, (u16, bool)> {
    let start = README
        .find("| code | status | a write may have applied |")
        .expect("the README has the error table");
    README[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let code = cells[0].trim_matches('`').to_string();
            let status = cells[1]
                .parse()
                .unwrap_or_else(|_| panic!("status of {code}"));
            let applied = match cells[2] {
                "yes" => true,
                "no" => false,
                other => panic!("{code}: `{other}` is neither yes nor no"),
            };
            (code, (status, applied))
        })
        .collect()
}

#[test]
fn the_readme_lists_every_problem_code_with_its_status() {
    let documented = readme_codes();
    let actual: BTreeMap<String, (u16, bool)> = ProblemCode::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), (c.status(), c.may_have_applied())))
        .collect();
    let missing: Vec<_> = actual
        .keys()
        .filter(|c| !documented.contains_key(*c))
        .collect();
    let unknown: Vec<_> = documented
        .keys()
        .filter(|c| !actual.contains_key(*c))
        .collect();
    assert!(missing.is_empty(), "README lacks {missing:?}");
    assert!(
        unknown.is_empty(),
        "README names codes that do not exist: {unknown:?}"
    );
    assert_eq!(documented, actual, "README's statuses and flags");
}

/// The `boxoffice_…` names in `text` (only those right after a `"` when
/// `quoted`: string literals of the sources), histogram sample suffixes taken
/// off.
fn metric_names(text: &str, quoted: bool) -> std::collections::BTreeSet<String> {
    let pattern = if quoted { "\"boxoffice_" } else { "boxoffice_" };
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(pattern) {
        let tail = &rest[at + pattern.len() - "boxoffice_".len()..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let name = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(name.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
/// Every metric the Grafana dashboard and the README's metrics table name is
/// one the node registers, and the README lists every one it registers.
fn the_dashboard_and_the_readme_name_registered_metrics() {
    let registered = metric_names(
        concat!(
            include_str!("../../src/metrics.rs"),
            include_str!("../../../storage/src/metrics.rs"),
        ),
        true,
    );
    assert!(registered.len() >= 20, "{registered:?}");
    let dashboard = include_str!("../../../deploy/grafana/boxoffice.json");
    let used = metric_names(dashboard, false);
    let unknown: Vec<_> = used.difference(&registered).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard uses unknown metrics {unknown:?}"
    );
    let start = README
        .find("| metric | type | labels | what |")
        .expect("the README has the metrics table");
    let table: String = README[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect::<Vec<_>>()
        .join("\n");
    let listed = metric_names(&table, false);
    assert_eq!(listed, registered, "README metrics table vs the code");
}

#[test]
/// The Dockerfile builds as a machine does (deploy/prereqs.sh, the workspace's
/// release build, deploy/package.sh's stripped binary) and runs as a non-root
/// user.
fn the_dockerfile_builds_as_a_machine_does_and_runs_unprivileged() {
    let dockerfile = include_str!("../../../Dockerfile");
    let test_sh = include_str!("../../../deploy/test.sh");
    for step in [
        "RUN bash deploy/prereqs.sh",
        "RUN cargo build --release --locked --workspace --bins",
        "RUN bash deploy/package.sh /out",
        "COPY --from=build /out/boxoffice /usr/local/bin/boxoffice",
    ] {
        assert!(dockerfile.contains(step), "the Dockerfile lacks {step:?}");
    }
    assert!(test_sh.contains("bash deploy/prereqs.sh"));
    assert!(test_sh.contains("cargo build --release --workspace --bins"));
    let last_stage = dockerfile.rsplit("\nFROM ").next().unwrap_or_default();
    let user = last_stage
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the image names its user");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "{user}"
    );
}
