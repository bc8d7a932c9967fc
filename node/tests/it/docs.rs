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
