//! The cluster as one node sees it ([`Cluster::status`](solo::Cluster::status)), for people:
//! the JSON of `--metrics`'s `/status` and `solo-node status --json`, and the table of
//! `solo-node status`.

use std::time::UNIX_EPOCH;

use solo::{ClusterStatus, MemberState};

use crate::quote;

/// `/status`: `{"node", "members": [...], "children": [...]}`, every field named in the
/// README's contract.
pub(crate) fn status_json(status: &ClusterStatus) -> String {
    let members: Vec<String> = status
        .members
        .iter()
        .map(|m| {
            let roles: Vec<String> = m.roles.iter().map(|r| quote(r)).collect();
            format!(
                "{{\"name\":{},\"incarnation\":{},\"addr\":{},\"state\":{},\"roles\":[{}],\"draining\":{}}}",
                quote(m.id.name.as_str()),
                m.id.incarnation,
                quote(&m.addr.to_string()),
                quote(state_name(m.state)),
                roles.join(","),
                m.draining
            )
        })
        .collect();
    let children: Vec<String> = status
        .children
        .iter()
        .map(|c| {
            let owner = c
                .assigned_to
                .as_ref()
                .map_or("null".to_owned(), |owner| quote(owner.name.as_str()));
            let mode = c.mode.map_or("null".to_owned(), |mode| {
                quote(&format!("{mode:?}").to_lowercase())
            });
            let here = c.running_here.as_ref().map_or("null".to_owned(), |r| {
                let since_ms = r
                    .since
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let token = r.token.map_or("null".to_owned(), |t| t.to_string());
                format!(
                    "{{\"instance\":{},\"since_ms\":{since_ms},\"token\":{token}}}",
                    r.instance
                )
            });
            format!(
                "{{\"id\":{},\"singleton\":{},\"mode\":{mode},\"owner\":{owner},\"running_here\":{here}}}",
                quote(c.id.as_str()),
                c.singleton
            )
        })
        .collect();
    format!(
        "{{\"node\":{},\"members\":[{}],\"children\":[{}]}}\n",
        quote(&status.node.to_string()),
        members.join(","),
        children.join(",")
    )
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
        MemberState::Left => "left",
    }
}

/// `solo-node status`: the members, then the children, as aligned columns. `observer`: the
/// name of the node that asked, left out (it joined only to ask).
pub(crate) fn status_table(status: &ClusterStatus, observer: &str) -> String {
    let mut members = vec![[
        "MEMBER".to_owned(),
        "INCARNATION".to_owned(),
        "ADDR".to_owned(),
        "STATE".to_owned(),
        "ROLES".to_owned(),
        "DRAINING".to_owned(),
    ]];
    for m in status
        .members
        .iter()
        .filter(|m| m.id.name.as_str() != observer)
    {
        members.push([
            m.id.name.to_string(),
            m.id.incarnation.to_string(),
            m.addr.to_string(),
            state_name(m.state).to_owned(),
            if m.roles.is_empty() {
                "-".to_owned()
            } else {
                m.roles.join(",")
            },
            if m.draining { "yes" } else { "no" }.to_owned(),
        ]);
    }
    let mut children = vec![[
        "CHILD".to_owned(),
        "KIND".to_owned(),
        "MODE".to_owned(),
        "OWNER".to_owned(),
    ]];
    for c in &status.children {
        children.push([
            c.id.to_string(),
            if c.singleton { "singleton" } else { "child" }.to_owned(),
            c.mode
                .map_or("-".to_owned(), |mode| format!("{mode:?}").to_lowercase()),
            c.assigned_to
                .as_ref()
                .map_or("-".to_owned(), |owner| owner.name.to_string()),
        ]);
    }
    format!("{}\n{}", columns(&members), columns(&children))
}

/// Rows as left-aligned columns two spaces apart.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}
