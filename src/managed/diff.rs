//! A line diff in the unified format (`tollgate config diff`): the file's settings against
//! the merged ones. Common leading and trailing lines are set aside first; the rest is
//! matched by longest common subsequence when small enough, else shown as removed then
//! added.

/// The most cells of the LCS table (the middle's lines multiplied).
const MAX_CELLS: usize = 4_000_000;
const CONTEXT: usize = 3;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Line<'a> {
    Same(&'a str),
    Gone(&'a str),
    Added(&'a str),
}

fn edits<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<Line<'a>> {
    let head = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let tail = a[head..]
        .iter()
        .rev()
        .zip(b[head..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[head..a.len() - tail], &b[head..b.len() - tail]);
    let mut out: Vec<Line> = a[..head].iter().map(|l| Line::Same(l)).collect();
    if am.len().saturating_mul(bm.len()) > MAX_CELLS {
        out.extend(am.iter().map(|l| Line::Gone(l)));
        out.extend(bm.iter().map(|l| Line::Added(l)));
    } else {
        // lcs[i][j]: the longest common subsequence of am[i..] and bm[j..].
        let w = bm.len() + 1;
        let mut lcs = vec![0u32; (am.len() + 1) * w];
        for i in (0..am.len()).rev() {
            for j in (0..bm.len()).rev() {
                lcs[i * w + j] = if am[i] == bm[j] {
                    lcs[(i + 1) * w + j + 1] + 1
                } else {
                    lcs[(i + 1) * w + j].max(lcs[i * w + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < am.len() || j < bm.len() {
            if i < am.len() && j < bm.len() && am[i] == bm[j] {
                out.push(Line::Same(am[i]));
                (i, j) = (i + 1, j + 1);
            } else if i < am.len() && (j == bm.len() || lcs[(i + 1) * w + j] >= lcs[i * w + j + 1])
            {
                out.push(Line::Gone(am[i]));
                i += 1;
            } else {
                out.push(Line::Added(bm[j]));
                j += 1;
            }
        }
    }
    out.extend(a[a.len() - tail..].iter().map(|l| Line::Same(l)));
    out
}

/// Two settings as a unified diff of their YAML, secrets masked; empty when they are equal.
pub fn settings(
    before: &crate::settings::Settings,
    after: &crate::settings::Settings,
    before_name: &str,
    after_name: &str,
) -> String {
    use crate::settings::to_yaml;
    unified(
        &to_yaml(&before.redacted()),
        &to_yaml(&after.redacted()),
        before_name,
        after_name,
    )
}

/// What the API changed: the file's settings against the merged ones at layer `revision`
/// (`tollgate config diff`, `GET /config/diff`).
pub fn api_changes(
    file: &crate::settings::Settings,
    merged: &crate::settings::Settings,
    revision: u64,
) -> String {
    settings(
        file,
        merged,
        "config file",
        &format!("with the API's changes (revision {revision})"),
    )
}

/// `before` and `after` as a unified diff; empty when they are equal.
pub fn unified(before: &str, after: &str, before_name: &str, after_name: &str) -> String {
    let a: Vec<&str> = before.lines().collect();
    let b: Vec<&str> = after.lines().collect();
    let lines = edits(&a, &b);
    let changed: Vec<usize> = (0..lines.len())
        .filter(|&k| !matches!(lines[k], Line::Same(_)))
        .collect();
    if changed.is_empty() {
        return String::new();
    }
    let mut out = format!("--- {before_name}\n+++ {after_name}\n");
    let mut k = 0;
    while k < changed.len() {
        let start = changed[k].saturating_sub(CONTEXT);
        let mut end = changed[k];
        while k < changed.len() && changed[k] <= end + 2 * CONTEXT + 1 {
            end = changed[k];
            k += 1;
        }
        let end = (end + CONTEXT + 1).min(lines.len());
        // Line numbers: count what precedes the hunk on each side.
        let old_at = lines[..start]
            .iter()
            .filter(|l| !matches!(l, Line::Added(_)))
            .count();
        let new_at = lines[..start]
            .iter()
            .filter(|l| !matches!(l, Line::Gone(_)))
            .count();
        let hunk = &lines[start..end];
        let old_len = hunk.iter().filter(|l| !matches!(l, Line::Added(_))).count();
        let new_len = hunk.iter().filter(|l| !matches!(l, Line::Gone(_))).count();
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            old_at + 1,
            new_at + 1
        ));
        for l in hunk {
            let (sign, text) = match l {
                Line::Same(t) => (' ', t),
                Line::Gone(t) => ('-', t),
                Line::Added(t) => ('+', t),
            };
            out.push(sign);
            out.push_str(text);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_only_what_changed_with_context() {
        let a = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        let b = "a\nb\nc\nd\ne\nf\nG\nh\ni\nj\nk\n";
        let d = unified(a, b, "x", "y");
        assert_eq!(
            d,
            "--- x\n+++ y\n@@ -4,7 +4,8 @@\n d\n e\n f\n-g\n+G\n h\n i\n j\n+k\n"
        );
        assert_eq!(unified(a, a, "x", "y"), "");
        assert!(unified("", "new\n", "x", "y").contains("+new"));
    }
}
