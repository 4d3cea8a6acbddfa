//! Finding where a key is in a block-style YAML file, so semantic errors (found after the YAML
//! has been turned into values) can still name file:line:column. Block style is what compose
//! files use; for a key inside a flow collection the nearest enclosing key is given.

/// Line and column (1-based) of the key at `path` (map keys; list positions as decimal
/// numbers), or of the deepest ancestor found.
pub fn locate(text: &str, path: &[&str]) -> Option<(u32, u32)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize;
    let mut end = lines.len();
    let mut min_indent: i64 = -1;
    let mut found: Option<(u32, u32)> = None;
    for key in path {
        let mut hit = None;
        if let Ok(idx) = key.parse::<usize>() {
            // The idx-th "- " item at the first list indent found in the block.
            let mut item_indent: Option<usize> = None;
            let mut count = 0usize;
            for (i, l) in lines.iter().enumerate().take(end).skip(start) {
                let t = l.trim_start();
                let ind = l.len() - t.len();
                if t.is_empty()
                    || t.starts_with('#')
                    || (ind as i64) <= min_indent && !t.starts_with('-')
                {
                    continue;
                }
                if t.starts_with("- ") || t == "-" {
                    let ii = *item_indent.get_or_insert(ind);
                    if ind == ii {
                        if count == idx {
                            hit = Some((i, ind));
                            break;
                        }
                        count += 1;
                    }
                }
            }
        } else {
            for (i, l) in lines.iter().enumerate().take(end).skip(start) {
                let t = l.trim_start().trim_start_matches("- ");
                let ind = l.len() - t.len();
                if (ind as i64) <= min_indent {
                    continue;
                }
                let k = t
                    .strip_prefix(&format!("{key}:"))
                    .or_else(|| t.strip_prefix(&format!("\"{key}\":")))
                    .or_else(|| t.strip_prefix(&format!("'{key}':")));
                if let Some(rest) = k {
                    if rest.is_empty() || rest.starts_with(' ') || rest.starts_with('\t') {
                        hit = Some((i, ind));
                        break;
                    }
                }
            }
        }
        let Some((i, ind)) = hit else { break };
        found = Some((i as u32 + 1, ind as u32 + 1));
        // The block of this key: following lines indented deeper.
        start = i + 1;
        min_indent = ind as i64;
        end = lines
            .iter()
            .enumerate()
            .skip(i + 1)
            .find(|(_, l)| {
                let t = l.trim_start();
                !t.is_empty()
                    && !t.starts_with('#')
                    && ((l.len() - t.len()) as i64) <= min_indent
                    && !(t.starts_with("- ")
                        && (l.len() - t.len()) as i64 == min_indent
                        && key.parse::<usize>().is_err())
            })
            .map(|(j, _)| j)
            .unwrap_or(lines.len());
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_list_items() {
        let y = "services:\n  web:\n    image: x\n    ports:\n      - \"80:80\"\n      - 90:90\n  db:\n    image: y\n";
        assert_eq!(locate(y, &["services", "web", "image"]), Some((3, 5)));
        assert_eq!(locate(y, &["services", "db", "image"]), Some((8, 5)));
        assert_eq!(locate(y, &["services", "web", "ports", "1"]), Some((6, 7)));
        assert_eq!(locate(y, &["services", "nope"]), Some((1, 1)));
    }
}
