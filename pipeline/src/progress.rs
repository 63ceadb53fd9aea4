//! Progress display for long work (hidden when stderr is not a terminal or when disabled).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar counting events.
pub fn events_bar(total: Option<u64>, enabled: bool, what: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    if !enabled {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    let template = if total.is_some() {
        "{prefix} [{bar:30.cyan/blue}] {human_pos}/{human_len} events {per_sec} eta {eta} {msg}"
    } else {
        "{prefix} {spinner} {human_pos} events {per_sec} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(what.to_string());
    bar
}
