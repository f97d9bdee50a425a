//! `mailherd man` and `mailherd completions`: the man page and shell
//! completions, generated from the same clap definition the binary parses
//! with, so they cannot drift from it. `scripts/package.sh` runs both.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;

/// mailherd(1) in roff: the top-level page, then a section per
/// subcommand at every depth (`MAILHERD MEMBERS ADD`) with its options.
/// There is one page only, so the command lists name the sections
/// (`mailherd members add`), not pages of their own (clap_mangen's lists
/// would say mailherd-members-add(1), which does not exist).
pub fn man(command: &mut clap::Command) -> anyhow::Result<ExitCode> {
    let mut command = command.clone().disable_help_subcommand(true);
    command.build();
    let top = clap_mangen::Man::new(command.clone());
    let mut out = Vec::new();
    top.render_title(&mut out)?;
    top.render_name_section(&mut out)?;
    top.render_synopsis_section(&mut out)?;
    top.render_description_section(&mut out)?;
    top.render_options_section(&mut out)?;
    command_list(&mut out, "SH", "mailherd", &command)?;
    top.render_version_section(&mut out)
        .context("rendering the man page")?;
    sections(&mut out, "mailherd", &command)?;
    std::io::stdout().write_all(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn visible(command: &clap::Command) -> impl Iterator<Item = &clap::Command> {
    command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// `COMMANDS`: each visible subcommand of `command` by its full name and
/// its one-line help.
fn command_list(
    out: &mut Vec<u8>,
    header: &str,
    path: &str,
    command: &clap::Command,
) -> anyhow::Result<()> {
    use clap_mangen::roff::{bold, roman, Roff};
    if visible(command).next().is_none() {
        return Ok(());
    }
    let mut roff = Roff::new();
    roff.control(header, ["COMMANDS"]);
    for sub in visible(command) {
        roff.control("TP", []);
        roff.text([bold(format!("{path} {}", sub.get_name()))]);
        if let Some(about) = sub.get_about() {
            roff.text([roman(about.to_string())]);
        }
    }
    roff.to_writer(out)?;
    Ok(())
}

fn sections(out: &mut Vec<u8>, path: &str, command: &clap::Command) -> anyhow::Result<()> {
    for sub in visible(command) {
        let name = format!("{path} {}", sub.get_name());
        writeln!(out, ".SH \"{}\"", name.to_uppercase())?;
        let mut section = Vec::new();
        let man = clap_mangen::Man::new(sub.clone());
        man.render_description_section(&mut section)?;
        man.render_options_section(&mut section)?;
        // Sub-sections, not new top-level headers, inside this section.
        let text = String::from_utf8_lossy(&section).replace(".SH ", ".SS ");
        out.extend_from_slice(text.as_bytes());
        command_list(out, "SS", &name, sub)?;
        sections(out, &name, sub)?;
    }
    Ok(())
}

pub fn completions(
    shell: clap_complete::Shell,
    command: &mut clap::Command,
) -> anyhow::Result<ExitCode> {
    clap_complete::generate(shell, command, "mailherd", &mut std::io::stdout());
    Ok(ExitCode::SUCCESS)
}
