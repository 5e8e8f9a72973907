//! `runinfer list` and `runinfer inspect`: the plugins of the root and one in detail.

use anyhow::{Result, bail};
use runinfer::manifest::BatchingConfig;

use crate::CommonArgs;

pub(crate) fn list(common: CommonArgs) -> Result<std::process::ExitCode> {
    let host = common.host()?;
    let root = common.plugin_root();
    let dirs = runinfer::host::plugin_dirs(&root);
    if dirs.is_empty() {
        bail!(
            "no plugins (directories with a plugin.toml) in {}",
            root.display()
        );
    }
    let mut failed = false;
    for dir in dirs {
        match host.load_plugin(&dir) {
            Ok(plugin) => {
                let models: Vec<String> = plugin.models().map(|m| m.id.clone()).collect();
                let signature = &plugin.info().signature;
                println!(
                    "{:<16} ok      tenant={} namespace={} models=[{}] signature={} -> {}",
                    plugin.name(),
                    plugin.manifest().tenant.as_deref().unwrap_or("-"),
                    plugin.namespace(),
                    models.join(", "),
                    signature.inputs,
                    signature.outputs
                );
            }
            Err(e) => {
                failed = true;
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                // A plugin's error may quote its model file's names: one line each.
                let reason = runinfer::untrusted::escape_control(&e.to_string()).into_owned();
                println!("{name:<16} FAILED  {reason}");
            }
        }
    }
    Ok(if failed {
        std::process::ExitCode::from(1)
    } else {
        std::process::ExitCode::SUCCESS
    })
}

pub(crate) fn inspect(name: &str, common: CommonArgs) -> Result<std::process::ExitCode> {
    let host = common.host()?;
    let plugin = host.load_plugin_named(&common.plugin_root(), name)?;
    let models: Vec<serde_json::Value> = plugin
        .models()
        .map(|m| {
            serde_json::json!({
                "name": m.name,
                "id": m.id,
                "bytes": m.model.byte_size(),
                "backend": m.model.backend(),
                "inputs": m.model.inputs(),
                "outputs": m.model.outputs(),
            })
        })
        .collect();
    let report = serde_json::json!({
        "name": plugin.name(),
        "dir": plugin.dir(),
        "tenant": plugin.manifest().tenant,
        "namespace": plugin.namespace(),
        "handler": plugin.info(),
        "batching": plugin.batching(&BatchingConfig::default()),
        "limits": {
            "memory_mb": plugin.manifest().limits.memory_mb,
            "timeout_ms": plugin.manifest().limits.timeout_ms,
        },
        "models": models,
        "load": plugin.load_report(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(std::process::ExitCode::SUCCESS)
}
