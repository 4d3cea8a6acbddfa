//! What `apply` and `plan` share: the spec flags and loading the Compose files.

use anyhow::anyhow;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone)]
pub struct SpecArgs {
    /// Compose file(s), merged in order. Default: compose.yaml (or docker-compose.yml) here.
    #[arg(short = 'f', long = "file")]
    pub files: Vec<PathBuf>,
    /// Project name. Default: `name:` in the file, else the file's directory.
    #[arg(short = 'p', long = "project-name")]
    pub project: Option<String>,
    /// Enable services of this profile (repeatable).
    #[arg(long = "profile")]
    pub profiles: Vec<String>,
    /// Warn about keys berth does not support instead of refusing the file.
    #[arg(long)]
    pub allow_unsupported: bool,
}

impl SpecArgs {
    /// Parse and validate; print warnings; return the project and the files read.
    pub fn load(&self) -> anyhow::Result<(berth_spec::Project, Vec<String>)> {
        let files = if self.files.is_empty() {
            let found = [
                "compose.yaml",
                "compose.yml",
                "docker-compose.yaml",
                "docker-compose.yml",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists())
            .ok_or_else(|| anyhow!("no compose file here: give one with -f FILE"))?;
            vec![found]
        } else {
            self.files.clone()
        };
        let loaded = berth_spec::load(&berth_spec::LoadOptions {
            files: files.clone(),
            project_name: self.project.clone(),
            env: None,
            allow_unsupported: self.allow_unsupported,
            profiles: self.profiles.clone(),
        })
        .map_err(|e| anyhow!("{e}"))?;
        for w in &loaded.warnings {
            eprintln!("warning: {w}");
        }
        for (name, s) in &loaded.project.services {
            if s.networks.len() > 1 {
                eprintln!(
                    "notice: service {name}: berth attaches a container to one bridge network: {} (the first by name)",
                    s.networks.keys().next().unwrap()
                );
            }
        }
        let names = files
            .iter()
            .map(|f| {
                std::fs::canonicalize(f)
                    .unwrap_or_else(|_| f.clone())
                    .display()
                    .to_string()
            })
            .collect();
        Ok((loaded.project, names))
    }
}
