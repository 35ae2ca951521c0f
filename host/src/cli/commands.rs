//! The client commands (`deploy`, `status`, `reload`, `rollback`, `rm`): each
//! one admin request, its answer printed for a person, and an exit status a
//! script can trust (a rejected deploy fails).

use std::fmt::Write as _;

use anyhow::{Context, bail};
use hyper::StatusCode;
use serde_json::Value;

use crate::admin::multipart;
use crate::cli::args::{AdminArgs, DeployArgs, ProjectArgs};
use crate::cli::client::{AdminClient, Answer};
use crate::model::manifest::ProjectName;

fn name_of(name: &str) -> anyhow::Result<ProjectName> {
    ProjectName::parse(name).map_err(anyhow::Error::msg)
}

/// `wasmhost deploy NAME PATH [--config FILE]`.
pub(crate) async fn deploy(args: DeployArgs) -> anyhow::Result<()> {
    let name = name_of(&args.name)?;
    let component = std::fs::read(&args.path)
        .with_context(|| format!("failed to read {}", args.path.display()))?;
    let client = client(&args.admin)?;
    let path = format!("/projects/{name}");
    let answer = match &args.config {
        None => {
            client
                .send("PUT", &path, Some("application/wasm"), component)
                .await?
        }
        Some(config) => {
            let text = std::fs::read(config)
                .with_context(|| format!("failed to read {}", config.display()))?;
            // Unique enough not to occur in the parts; RFC 2046 caps boundaries at 70 characters.
            let boundary = format!(
                "wasmhost-{}",
                &crate::swap::compiler::Compiler::digest(&component)[..40]
            );
            let body = multipart::encode(
                &boundary,
                &[
                    ("component", "application/wasm", &component),
                    ("config", "application/toml", &text),
                ],
            );
            let content_type = format!("multipart/form-data; boundary={boundary}");
            client.send("PUT", &path, Some(&content_type), body).await?
        }
    };
    print_change(&name, &answer)
}

/// `wasmhost reload NAME` and `wasmhost rollback NAME`.
pub(crate) async fn change(args: ProjectArgs, action: &str) -> anyhow::Result<()> {
    let name = name_of(&args.name)?;
    let client = client(&args.admin)?;
    let answer = client
        .send(
            "POST",
            &format!("/projects/{name}/{action}"),
            None,
            Vec::new(),
        )
        .await?;
    print_change(&name, &answer)
}

/// `wasmhost rm NAME`.
pub(crate) async fn remove(args: ProjectArgs) -> anyhow::Result<()> {
    let name = name_of(&args.name)?;
    let client = client(&args.admin)?;
    let answer = client
        .send("DELETE", &format!("/projects/{name}"), None, Vec::new())
        .await?;
    if answer.status != StatusCode::OK {
        bail!("{name}: {}", answer.body.trim());
    }
    println!("{name}: removed");
    Ok(())
}

/// `wasmhost status`.
pub(crate) async fn status(args: AdminArgs) -> anyhow::Result<()> {
    let answer = client(&args)?
        .send("GET", "/projects", None, Vec::new())
        .await?;
    if answer.status != StatusCode::OK {
        bail!(
            "the admin API answered {}: {}",
            answer.status,
            answer.body.trim()
        );
    }
    print!("{}", status_table(&answer.json()?));
    Ok(())
}

/// One line for a live, unchanged or rejected change; rejections are errors.
fn print_change(name: &ProjectName, answer: &Answer) -> anyhow::Result<()> {
    match answer.status {
        StatusCode::OK => {
            let json = answer.json()?;
            if json["outcome"] == "unchanged" {
                println!("{name}: unchanged (v{} still live)", json["version"]);
            } else {
                let how = if json["cache_hit"] == true {
                    "prepared from cache"
                } else {
                    "compiled"
                };
                println!(
                    "{name}: v{} live ({how} in {:.1} ms, swap {:.2} ms)",
                    json["live_version"],
                    json["compile_ms_this"].as_f64().unwrap_or(0.0),
                    json["swap_ms"].as_f64().unwrap_or(0.0)
                );
            }
            Ok(())
        }
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::CONFLICT if answer.json().is_ok() => {
            let json = answer.json()?;
            bail!(
                "{} (step: {})",
                json["message"].as_str().unwrap_or("rejected"),
                json["step"].as_str().unwrap_or("?")
            )
        }
        status => bail!(
            "{name}: the admin API answered {status}: {}",
            answer.body.trim()
        ),
    }
}

fn status_table(projects: &Value) -> String {
    let mut table = format!(
        "{:<20} {:<20} {:>7} {:<10} {:>9} {:>6}  {}\n",
        "NAME", "ROUTE", "VERSION", "STATE", "IN FLIGHT", "SWAPS", "LAST ERROR"
    );
    for project in projects.as_array().map(Vec::as_slice).unwrap_or_default() {
        let text = |key: &str| project[key].as_str().unwrap_or("-").to_string();
        let in_flight: u64 = project["versions"]
            .as_array()
            .map(|versions| {
                versions
                    .iter()
                    .filter_map(|v| v["in_flight"].as_u64())
                    .sum()
            })
            .unwrap_or(0);
        let version = project["version"]
            .as_u64()
            .map_or_else(|| "-".to_string(), |v| format!("v{v}"));
        let error = project["last_error"]
            .as_str()
            .unwrap_or("")
            .replace('\n', " ");
        let _ = writeln!(
            table,
            "{:<20} {:<20} {:>7} {:<10} {:>9} {:>6}  {}",
            text("name"),
            text("route"),
            version,
            text("state"),
            in_flight,
            project["stats"]["swaps"].as_u64().unwrap_or(0),
            error
        );
        if let Some(reference) = project["oci"]["reference"].as_str() {
            let digest = project["oci"]["digest"]
                .as_str()
                .unwrap_or("not pulled yet");
            let _ = writeln!(table, "{:<20} └ {reference} @ {digest}", "");
        }
    }
    table
}

/// `wasmhost push FILE oci://REGISTRY/REPOSITORY:TAG`.
pub(crate) async fn push(args: crate::cli::args::PushArgs) -> anyhow::Result<()> {
    let reference =
        crate::model::oci_ref::OciReference::parse(&args.reference).map_err(anyhow::Error::msg)?;
    let url = crate::oci::push::push(&args.path, &reference, &args.insecure_registry).await?;
    println!("pushed {} to {reference} ({url})", args.path.display());
    Ok(())
}

/// A client for the admin API the arguments name, with their token.
fn client(args: &AdminArgs) -> anyhow::Result<AdminClient> {
    Ok(AdminClient::new(&args.admin)?.with_token(args.token()?))
}
