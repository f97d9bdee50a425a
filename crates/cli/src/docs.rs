//! `mailherd man` and `mailherd completions`: the man page and shell
//! completions, generated from the same clap definition the binary parses
//! with, so they cannot drift from it. `scripts/package.sh` runs both.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

/// mailherd(1) in roff, with a page section per subcommand appended
/// (clap_mangen renders one command at a time).
pub fn man(command: &mut clap::Command) -> anyhow::Result<ExitCode> {
    command.build();
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut out)
        .context("rendering the man page")?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        writeln!(out, ".SH \"MAILHERD {}\"", sub.get_name().to_uppercase())?;
        let mut section = Vec::new();
        let man = clap_mangen::Man::new(sub.clone());
        man.render_description_section(&mut section)?;
        man.render_options_section(&mut section)?;
        if sub.has_subcommands() {
            man.render_subcommands_section(&mut section)?;
        }
        // Sub-sections, not new top-level headers, inside this section.
        let text = String::from_utf8_lossy(&section).replace(".SH ", ".SS ");
        out.extend_from_slice(text.as_bytes());
    }
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

pub fn completions(
    shell: clap_complete::Shell,
    command: &mut clap::Command,
) -> anyhow::Result<ExitCode> {
    clap_complete::generate(shell, command, "mailherd", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
