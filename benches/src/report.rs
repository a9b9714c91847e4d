//! The Markdown report: medians and spreads per scenario and archive, and their ratio.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::scenarios::BenchResult;

/// Renders the results (JSON lines) as Markdown tables.
pub fn render(lines: &str) -> anyhow::Result<String> {
    let results: Vec<BenchResult> = lines
        .lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    // (scenario, metric) -> target -> values
    let mut table: BTreeMap<(String, String), BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut errors: BTreeMap<(String, String), String> = BTreeMap::new();
    for result in &results {
        if let Some(error) = &result.error {
            errors.insert(
                (result.scenario.clone(), result.target.clone()),
                error.clone(),
            );
        }
        for (metric, value) in &result.metrics {
            table
                .entry((result.scenario.clone(), metric.clone()))
                .or_default()
                .entry(result.target.clone())
                .or_default()
                .push(*value);
        }
    }
    // The storescp sink (DIMSE scenarios) gets its own column when it was measured.
    let with_sink = results.iter().any(|result| result.target == "sink");
    let mut out = String::new();
    let mut header =
        "| scenario | metric | Strata median (min–max) | Orthanc median (min–max) |".to_owned();
    let mut rule = "|---|---|---|---|".to_owned();
    if with_sink {
        header.push_str(" storescp sink median (min–max) |");
        rule.push_str("---|");
    }
    header.push_str(" Strata / Orthanc |");
    rule.push_str("---|");
    if with_sink {
        header.push_str(" Strata / sink |");
        rule.push_str("---|");
    }
    writeln!(out, "{header}\n{rule}")?;
    for ((scenario, metric), by_target) in &table {
        if by_target.contains_key("machine") {
            continue;
        }
        let cell = |target: &str| match by_target.get(target) {
            Some(values) => format_spread(values),
            None => errors
                .get(&(scenario.clone(), target.to_owned()))
                .map_or("–".to_owned(), |_| "error".to_owned()),
        };
        let ratio = |other: &str| match (by_target.get("strata"), by_target.get(other)) {
            (Some(strata), Some(values)) if median(values) != 0.0 => {
                format!("{:.2}", median(strata) / median(values))
            }
            _ => "–".to_owned(),
        };
        let mut row = format!(
            "| {scenario} | {metric} | {} | {} |",
            cell("strata"),
            cell("orthanc")
        );
        if with_sink {
            row.push_str(&format!(" {} |", cell("sink")));
        }
        row.push_str(&format!(" {} |", ratio("orthanc")));
        if with_sink {
            row.push_str(&format!(" {} |", ratio("sink")));
        }
        writeln!(out, "{row}")?;
    }
    let machine: Vec<_> = table
        .iter()
        .filter(|(_, by_target)| by_target.contains_key("machine"))
        .collect();
    if !machine.is_empty() {
        writeln!(out, "\n| machine limit | metric | median (min–max) |")?;
        writeln!(out, "|---|---|---|")?;
        for ((scenario, metric), by_target) in machine {
            writeln!(
                out,
                "| {scenario} | {metric} | {} |",
                format_spread(&by_target["machine"])
            )?;
        }
    }
    if !errors.is_empty() {
        writeln!(out, "\nErrors:\n")?;
        for ((scenario, target), error) in &errors {
            writeln!(out, "- {target} / {scenario}: {}", error.replace('\n', " "))?;
        }
    }
    Ok(out)
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

fn format_spread(values: &[f64]) -> String {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if values.len() == 1 {
        round(values[0])
    } else {
        format!("{} ({}–{})", round(median(values)), round(min), round(max))
    }
}

fn round(value: f64) -> String {
    if value.abs() >= 100.0 {
        format!("{value:.0}")
    } else if value.abs() >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_report_has_medians_spreads_and_ratios() {
        let lines = [
            r#"{"target":"strata","scenario":"stow-c1","params":{},"metrics":{"instances_per_s":100.0},"error":null}"#,
            r#"{"target":"strata","scenario":"stow-c1","params":{},"metrics":{"instances_per_s":120.0},"error":null}"#,
            r#"{"target":"strata","scenario":"stow-c1","params":{},"metrics":{"instances_per_s":110.0},"error":null}"#,
            r#"{"target":"orthanc","scenario":"stow-c1","params":{},"metrics":{"instances_per_s":50.0},"error":null}"#,
            r#"{"target":"machine","scenario":"disk-write","params":{},"metrics":{"mb_per_s":900.0},"error":null}"#,
            r#"{"target":"strata","scenario":"frame","params":{},"metrics":{},"error":"GET answered 404"}"#,
            r#"{"target":"sink","scenario":"stow-c1","params":{},"metrics":{"instances_per_s":440.0},"error":null}"#,
        ]
        .join("\n");
        let report = render(&lines).unwrap();
        assert!(
            report.contains(
                "| stow-c1 | instances_per_s | 110 (100–120) | 50.0 | 440 | 2.20 | 0.25 |"
            ),
            "{report}"
        );
        assert!(
            report.contains("| disk-write | mb_per_s | 900 |"),
            "{report}"
        );
        assert!(
            report.contains("strata / frame: GET answered 404"),
            "{report}"
        );
    }
}
