//! `migration-injector inject`: the webhook's mutation applied to manifest files or stdin.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Args;
use migration_injector::mutate::manifests;

use super::injection_args::InjectionArgs;

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifest file (YAML or JSON, multi-document), a directory of them, or `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    #[command(flatten)]
    pub injection: InjectionArgs,
}

pub fn inject(args: InjectArgs) -> Result<()> {
    let config = migration_injector::mutate::InjectorConfig::from(args.injection);
    let inputs: Vec<(String, String)> = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        vec![("stdin".into(), s)]
    } else if args.file.is_dir() {
        // A directory: its .yaml, .yml and .json files, in name order, each read on its own
        // (as kubectl does) so document numbers and lines in messages are those of the file.
        let mut paths: Vec<_> = std::fs::read_dir(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        paths.sort();
        paths.iter().map(|p| read(p)).collect::<Result<_>>()?
    } else {
        vec![read(&args.file)?]
    };
    let mut out = String::new();
    for (name, text) in &inputs {
        let injected = manifests::inject_str(text, &config).with_context(|| name.clone())?;
        for w in &injected.warnings {
            eprintln!("warning: {name}: {w}");
        }
        if injected.text.trim().is_empty() {
            continue;
        }
        if !out.is_empty() {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            if !injected.text.starts_with("---") {
                out.push_str("---\n");
            }
        }
        out.push_str(&injected.text);
    }
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing stdout")?;
    Ok(())
}

fn read(path: &Path) -> Result<(String, String)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((path.display().to_string(), text))
}
