//! The status page (`GET /`): one server-rendered HTML page, no scripts, no build step. Per
//! view: its version, what the online store holds and how fresh it is against the view's SLA;
//! per source partition of the last streaming commit: offset and event-time lag; recent
//! commits of the offline store, when the config has one.

use crate::lineage::format_micros;
use crate::registry::status::ViewStatus;
use quiver_store::online::OnlineStamp;
use std::fmt::Write;

/// One view as the page shows it.
pub struct PageView {
    /// Name.
    pub name: String,
    /// Version served.
    pub version: String,
    /// Key columns.
    pub keys: Vec<String>,
    /// Online features.
    pub features: Vec<String>,
    /// What the online store holds for it, if anything.
    pub online: Option<OnlineStamp>,
    /// Its `freshness_sla`, seconds.
    pub sla_s: Option<f64>,
    /// Its offline store status, if the store has it.
    pub offline: Option<ViewStatus>,
}

/// `text` escaped for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds as a short human duration.
fn human(seconds: f64) -> String {
    let s = seconds.abs();
    let text = if s < 1.0 {
        format!("{:.0} ms", s * 1e3)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 3_600.0 {
        format!("{:.1} min", s / 60.0)
    } else if s < 172_800.0 {
        format!("{:.1} h", s / 3_600.0)
    } else {
        format!("{:.1} days", s / 86_400.0)
    };
    if seconds < 0.0 {
        format!("-{text}")
    } else {
        text
    }
}

/// The page for `pipeline`'s `views` as of `now_ms`.
pub fn render(pipeline: &str, views: &[PageView], now_ms: u64) -> String {
    let mut h = String::new();
    let now_s = now_ms as f64 / 1e3;
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Quiver: {p}</title>\
<style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}th{{background:#f4f4f4}}\
.ok{{color:#1a7f37}}.late{{color:#b3261e;font-weight:bold}}code{{font-size:90%}}</style></head><body>\
<h1>Quiver: {p}</h1><p>As of {now}. JSON: <a href=\"/v1/views\">/v1/views</a>, metrics: \
<a href=\"/metrics\">/metrics</a>.</p>",
        p = escape(pipeline),
        now = format_micros(now_ms as i64 * 1000)
    );
    h.push_str("<h2>Views</h2><table id=\"views\"><tr><th>view</th><th>version</th><th>keys</th><th>online entities</th><th>epoch</th><th>watermark</th><th>freshness</th><th>SLA</th><th>features</th></tr>");
    for v in views {
        let (keys, epoch, watermark, freshness) = match &v.online {
            Some(s) => (
                s.keys.to_string(),
                s.epoch.to_string(),
                s.watermark.map_or("none".into(), format_micros),
                s.watermark.map(|w| now_s - w as f64 / 1e6),
            ),
            None => ("not written yet".into(), String::new(), String::new(), None),
        };
        let sla = match (v.sla_s, freshness) {
            (Some(sla), Some(f)) if f <= sla => {
                format!("<span class=\"ok\">holds ({})</span>", human(sla))
            }
            (Some(sla), Some(_)) => format!("<span class=\"late\">missed ({})</span>", human(sla)),
            (Some(sla), None) => format!("unknown ({})", human(sla)),
            (None, _) => "none".into(),
        };
        let _ = write!(
            h,
            "<tr class=\"view\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{keys}</td><td>{epoch}</td><td>{watermark}</td><td>{}</td><td>{sla}</td><td>{}</td></tr>",
            escape(&v.name),
            escape(&v.version),
            escape(&v.keys.join(", ")),
            freshness.map_or(String::new(), human),
            escape(&v.features.join(", "))
        );
    }
    h.push_str("</table>");
    let offline: Vec<&ViewStatus> = views.iter().filter_map(|v| v.offline.as_ref()).collect();
    if offline.is_empty() {
        h.push_str("<p>No offline store status (the config's store has no registered views; see <code>quiver apply</code>).</p>");
    } else {
        h.push_str("<h2>Offline store</h2><table id=\"offline\"><tr><th>view</th><th>version</th><th>rows</th><th>commits</th><th>last commit</th><th>newest event</th><th>latency p50 / p99</th></tr>");
        for s in &offline {
            let latency = match (s.latency_p50_s, s.latency_p99_s) {
                (Some(a), Some(b)) => format!("{} / {}", human(a), human(b)),
                _ => String::new(),
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{latency}</td></tr>",
                escape(&s.view),
                escape(&s.version),
                s.rows,
                s.commits,
                escape(s.last_commit.as_deref().unwrap_or("")),
                escape(s.last_event_time.as_deref().unwrap_or(""))
            );
        }
        h.push_str("</table>");
        if let Some(s) = offline.iter().find(|s| !s.partitions.is_empty()) {
            h.push_str("<h2>Source partitions</h2><table id=\"partitions\"><tr><th>partition</th><th>offset</th><th>messages behind</th><th>newest event</th><th>event lag</th></tr>");
            for p in &s.partitions {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&p.partition),
                    p.offset.map_or(String::new(), |o| o.to_string()),
                    p.consumer_lag.map_or(String::new(), |n| n.to_string()),
                    escape(p.newest_event.as_deref().unwrap_or("")),
                    p.event_lag_s.map_or(String::new(), human)
                );
            }
            h.push_str("</table>");
        }
        h.push_str("<p>Lineage of a value: <code>quiver lineage &lt;view&gt; --entity K --at T</code>.</p>");
    }
    h.push_str("</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_escapes_names_and_judges_the_sla() {
        let stamp = OnlineStamp {
            run: "r".into(),
            epoch: 3,
            watermark: Some(9_000_000),
            committed_unix_ms: 9_500,
            fingerprint: 0,
            keys: 7,
        };
        let view = |name: &str, sla| PageView {
            name: name.into(),
            version: "abc".into(),
            keys: vec!["card_id".into()],
            features: vec!["n".into()],
            online: Some(stamp.clone()),
            sla_s: sla,
            offline: None,
        };
        let page = render(
            "<demo>",
            &[view("fast", Some(60.0)), view("slow", Some(0.5))],
            10_000,
        );
        assert!(page.contains("Quiver: &lt;demo&gt;") && !page.contains("<demo>"));
        assert!(
            page.contains("<span class=\"ok\">holds (60.0 s)</span>"),
            "{page}"
        );
        assert!(
            page.contains("<span class=\"late\">missed (500 ms)</span>"),
            "{page}"
        );
    }
}
