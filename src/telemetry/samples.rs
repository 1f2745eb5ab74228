//! One snapshot of the agent's metrics as remote-write series: the very text `/metrics`
//! serves (the same registry, refreshed the same way), read back into samples. prometheus-client
//! 0.24 has no public way to walk its registry other than its encoders (the protobuf one needs
//! protoc at build time), so its OpenMetrics text is the source; this reads exactly the subset
//! that encoder writes (`name{label="value",...} value`, comments, `# EOF`).

use super::remote_write::{Label, Sample, TimeSeries};

/// One sample of a snapshot: its sorted labels (with `__name__`) and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub labels: Vec<Label>,
    pub value: f64,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("metrics line {line} is not a sample: {why}")]
pub struct ParseError {
    pub line: usize,
    pub why: &'static str,
}

/// Every sample in `text`, each with `extra` labels added (they win over a label of the same
/// name, which validation keeps from happening).
pub fn parse(text: &str, extra: &[(String, String)]) -> Result<Vec<Point>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |why| ParseError { line: i + 1, why };
        let name_end = line.find(['{', ' ']).ok_or(err("no value"))?;
        let name = &line[..name_end];
        if name.is_empty() {
            return Err(err("no metric name"));
        }
        let mut labels = vec![Label {
            name: "__name__".into(),
            value: name.into(),
        }];
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            rest = parse_labels(r, &mut labels).ok_or(err("bad label set"))?;
        }
        // The value, then an optional timestamp or exemplar, which a snapshot does not use.
        let value = rest
            .split_whitespace()
            .next()
            .ok_or(err("no value"))?
            .parse::<f64>()
            .map_err(|_| err("value is not a number"))?;
        for (k, v) in extra {
            labels.retain(|l| &l.name != k);
            labels.push(Label {
                name: k.clone(),
                value: v.clone(),
            });
        }
        // An empty value means "no such label" to Prometheus; the spec forbids sending one.
        labels.retain(|l| !l.value.is_empty());
        labels.sort();
        out.push(Point { labels, value });
    }
    Ok(out)
}

/// Reads `a="x",b="y"}` into `labels`; returns what follows the `}`.
fn parse_labels<'a>(mut s: &'a str, labels: &mut Vec<Label>) -> Option<&'a str> {
    loop {
        if let Some(rest) = s.strip_prefix('}') {
            return Some(rest);
        }
        let eq = s.find('=')?;
        let name = s[..eq].trim_start_matches(',').trim();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (_, c) => value.push(c),
            }
        };
        labels.push(Label {
            name: name.to_string(),
            value,
        });
        s = s[end + 1..].strip_prefix(',').unwrap_or(&s[end + 1..]);
    }
}

/// Series of several snapshots merged: each series once, its samples oldest first (what the
/// spec asks, and what lets a receiver append in order).
pub fn merge<'a>(snapshots: impl IntoIterator<Item = (i64, &'a [Point])>) -> Vec<TimeSeries> {
    let mut index: std::collections::HashMap<&'a [Label], usize> = Default::default();
    let mut series: Vec<TimeSeries> = Vec::new();
    for (at, points) in snapshots {
        for p in points {
            let i = *index.entry(p.labels.as_slice()).or_insert_with(|| {
                series.push(TimeSeries {
                    labels: p.labels.clone(),
                    samples: Vec::new(),
                });
                series.len() - 1
            });
            series[i].samples.push(Sample {
                value: p.value,
                timestamp: at,
            });
        }
    }
    for s in &mut series {
        s.samples.sort_by_key(|x| x.timestamp);
    }
    series
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &Point) -> Vec<(&str, &str)> {
        p.labels
            .iter()
            .map(|l| (l.name.as_str(), l.value.as_str()))
            .collect()
    }

    #[test]
    fn reads_the_registry_text() {
        let m = crate::metrics::Metrics::new();
        m.observe_upstream("get_balance", "ok", 0.01);
        m.online.set(1);
        let text = m.encode();
        let extra = vec![("store_id".to_string(), "s-1".to_string())];
        let points = parse(&text, &extra).unwrap();
        let online = points
            .iter()
            .find(|p| {
                p.labels
                    .iter()
                    .any(|l| l.value == "pointsd_upstream_online")
            })
            .unwrap();
        assert_eq!(online.value, 1.0);
        assert_eq!(
            names(online),
            vec![("__name__", "pointsd_upstream_online"), ("store_id", "s-1")]
        );
        let requests = points
            .iter()
            .find(|p| {
                p.labels
                    .iter()
                    .any(|l| l.value == "pointsd_upstream_requests_total")
            })
            .unwrap();
        assert_eq!(requests.value, 1.0);
        assert!(
            names(requests).contains(&("op", "get_balance")),
            "{requests:?}"
        );
        let inf = points
            .iter()
            .find(|p| p.labels.iter().any(|l| l.name == "le" && l.value == "+Inf"))
            .unwrap();
        assert_eq!(inf.value, 1.0);
        // Every sample line of the text became a point.
        let lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        assert_eq!(points.len(), lines);
        assert!(points.iter().all(|p| p.labels.is_sorted()));
    }

    #[test]
    fn table_of_lines() {
        type Want = Option<(&'static [(&'static str, &'static str)], f64)>;
        let cases: &[(&str, Want)] = &[
            ("a 1", Some((&[("__name__", "a")], 1.0))),
            (
                "a{b=\"c\"} 2.5",
                Some((&[("__name__", "a"), ("b", "c")], 2.5)),
            ),
            (
                "a{b=\"x\\\"y\\\\\",c=\"\"} NaN",
                Some((&[("__name__", "a"), ("b", "x\"y\\")], f64::NAN)),
            ),
            (
                "a{b=\"c\"} 3 1700000000",
                Some((&[("__name__", "a"), ("b", "c")], 3.0)),
            ),
            ("a", None),
            ("a{b=c} 1", None),
            ("a{b=\"c\" 1", None),
            ("a x", None),
        ];
        for (line, want) in cases {
            match (parse(line, &[]), want) {
                (Ok(p), Some((labels, v))) => {
                    assert_eq!(names(&p[0]), labels.to_vec(), "{line}");
                    assert!(
                        p[0].value == *v || (v.is_nan() && p[0].value.is_nan()),
                        "{line}"
                    );
                }
                (Err(_), None) => {}
                (got, _) => panic!("{line}: {got:?}"),
            }
        }
    }

    #[test]
    fn merge_keeps_each_series_once_oldest_first() {
        let a = parse("x 1\ny 2", &[]).unwrap();
        let b = parse("x 3", &[]).unwrap();
        let s = merge([(2_000, b.as_slice()), (1_000, a.as_slice())]);
        assert_eq!(s.len(), 2);
        let x = &s[0];
        assert_eq!(
            x.samples
                .iter()
                .map(|s| (s.timestamp, s.value))
                .collect::<Vec<_>>(),
            vec![(1_000, 1.0), (2_000, 3.0)]
        );
    }
}
