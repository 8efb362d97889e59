//! `migration-injector inject`: the webhook's mutation applied to manifest files or stdin.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use migration_injector::mutate::manifests;

use super::injection_args::InjectionArgs;

#[derive(Debug, Args)]
pub struct InjectArgs {
    /// Manifest file (YAML or JSON, multi-document), or `-` for stdin.
    #[arg(short = 'f', long = "filename")]
    pub file: PathBuf,
    #[command(flatten)]
    pub injection: InjectionArgs,
}

pub fn inject(args: InjectArgs) -> Result<()> {
    let config = migration_injector::mutate::InjectorConfig::from(args.injection);
    let input = if args.file.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else if args.file.is_dir() {
        // A directory: its .yaml, .yml and .json files, in name order.
        let mut paths: Vec<_> = std::fs::read_dir(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension()
                    .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            })
            .collect();
        paths.sort();
        let mut s = String::new();
        for p in paths {
            let text =
                std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
            s.push_str("---\n");
            s.push_str(&text);
            s.push('\n');
        }
        s
    } else {
        std::fs::read_to_string(&args.file)
            .with_context(|| format!("reading {}", args.file.display()))?
    };
    let injected = manifests::inject_str(&input, &config)?;
    for w in &injected.warnings {
        eprintln!("warning: {w}");
    }
    let out = manifests::render(&injected)?;
    std::io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing stdout")?;
    Ok(())
}
