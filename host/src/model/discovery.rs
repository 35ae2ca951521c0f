//! Scans the projects folder. Each entry becomes a `ProjectSource` (what
//! to load and how to route it), a failed project (valid name, broken
//! config or component) or a skipped entry (not a valid project name).
//!
//! - `DIR/NAME/` holding exactly one `*.wasm`, or a `wasmhost.toml` whose
//!   `component = "file.wasm"` names it;
//! - `DIR/NAME.wasm`, a one-file project with default settings.
//!
//! Hidden entries (`.git`, editor swap files) and files other than `*.wasm`
//! at the top level are not project candidates and are ignored silently.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::model::manifest::{MANIFEST_FILE, Manifest, ProjectName};

/// Everything needed to load and route one project, read from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProjectSource {
    /// The project's name, from its folder or file name.
    pub(crate) name: ProjectName,
    /// The folder or `.wasm` file that defines the project.
    pub(crate) entry: PathBuf,
    /// The component file to compile.
    pub(crate) component: PathBuf,
    /// The effective route: the manifest's, or `/NAME`.
    pub(crate) route: String,
    /// The parsed manifest (all defaults for a one-file project).
    pub(crate) manifest: Manifest,
}

/// A project candidate with a valid name that could not be loaded.
#[derive(Debug)]
pub(crate) struct FailedProject {
    /// The project's name.
    pub(crate) name: ProjectName,
    /// The folder or file that defines it.
    pub(crate) entry: PathBuf,
    /// Why it cannot be served, naming the file (and line) at fault.
    pub(crate) error: anyhow::Error,
}

/// An entry that is not a project at all, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The folder or file that was skipped.
    pub entry: PathBuf,
    /// Why, in words.
    pub reason: String,
}

/// The result of scanning a projects folder.
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Projects ready to compile, sorted by name.
    pub(crate) projects: Vec<ProjectSource>,
    /// Projects whose config or component file is unusable.
    pub(crate) failed: Vec<FailedProject>,
    /// Entries that are not valid project names.
    pub(crate) skipped: Vec<Skipped>,
}

/// Scans `root`. Fails only when `root` itself cannot be read; every problem
/// with a single project is recorded in the [`Scan`] instead.
pub(crate) fn scan(root: &Path) -> anyhow::Result<Scan> {
    let mut entries: Vec<(String, PathBuf, bool)> = Vec::new();
    let read = std::fs::read_dir(root)
        .with_context(|| format!("failed to read projects directory {}", root.display()))?;
    let mut scan = Scan::default();
    for entry in read {
        let entry = entry
            .with_context(|| format!("failed to read projects directory {}", root.display()))?;
        let path = entry.path();
        let Some(file_name) = entry.file_name().to_str().map(str::to_string) else {
            scan.skipped.push(Skipped {
                entry: path,
                reason: "the name is not valid UTF-8".into(),
            });
            continue;
        };
        if file_name.starts_with('.') {
            continue;
        }
        let is_dir = path.is_dir();
        let candidate = if is_dir {
            file_name
        } else if let Some(stem) = file_name.strip_suffix(".wasm") {
            stem.to_string()
        } else {
            continue;
        };
        entries.push((candidate, path, is_dir));
    }
    entries.sort();

    for (candidate, entry, is_dir) in entries {
        let name = match ProjectName::parse(&candidate) {
            Ok(name) => name,
            Err(reason) => {
                scan.skipped.push(Skipped { entry, reason });
                continue;
            }
        };
        let taken = scan
            .projects
            .iter()
            .map(|p| (&p.name, &p.entry))
            .chain(scan.failed.iter().map(|p| (&p.name, &p.entry)))
            .find(|(other, _)| **other == name);
        if let Some((_, first)) = taken {
            scan.skipped.push(Skipped {
                reason: format!("project `{name}` is already defined by {}", first.display()),
                entry,
            });
            continue;
        }
        let loaded = if is_dir {
            load_folder(name.clone(), &entry)
        } else {
            Ok(one_file(name.clone(), &entry))
        };
        match loaded {
            Ok(source) => scan.projects.push(source),
            Err(error) => scan.failed.push(FailedProject { name, entry, error }),
        }
    }
    Ok(scan)
}

/// Reads project `name` from `root` alone (for a reload): the `NAME/` folder,
/// else `NAME.wasm`. `Ok(None)` when neither exists.
pub(crate) fn find(root: &Path, name: &ProjectName) -> anyhow::Result<Option<ProjectSource>> {
    let folder = root.join(name.as_str());
    if folder.is_dir() {
        return load_folder(name.clone(), &folder).map(Some);
    }
    let file = root.join(format!("{name}.wasm"));
    if file.is_file() {
        return Ok(Some(one_file(name.clone(), &file)));
    }
    Ok(None)
}

/// Where a deploy of `name` writes its component, and the settings it gets:
/// an existing project keeps its layout and `wasmhost.toml`; a new one
/// becomes `NAME/NAME.wasm` with defaults.
///
/// `uploaded` is a manifest sent with the deploy; it replaces the one on disk.
pub(crate) fn deploy_target(
    root: &Path,
    name: &ProjectName,
    uploaded: Option<Manifest>,
) -> anyhow::Result<ProjectSource> {
    let folder = root.join(name.as_str());
    let file = root.join(format!("{name}.wasm"));
    if !folder.is_dir() && file.is_file() {
        if uploaded.is_some() {
            bail!(
                "{} is a one-file project, which has no {MANIFEST_FILE}; move it to {}/ to deploy a config",
                file.display(),
                folder.display()
            );
        }
        return Ok(one_file(name.clone(), &file));
    }
    let manifest_path = folder.join(MANIFEST_FILE);
    let manifest = match uploaded {
        Some(manifest) => manifest,
        None if manifest_path.is_file() => Manifest::load(&manifest_path)?,
        None => Manifest::default(),
    };
    let component = match (&manifest.component, &manifest.oci) {
        // Pulled, never a file: the reference stands where a path would,
        // in messages and the admin API.
        (_, Some(reference)) => PathBuf::from(reference.to_string()),
        (Some(relative), _) => folder.join(relative),
        (None, None) if folder.is_dir() => match wasm_files(&folder)? {
            found if found.is_empty() => folder.join(format!("{name}.wasm")),
            found => one_of(&folder, found)?,
        },
        (None, None) => folder.join(format!("{name}.wasm")),
    };
    Ok(ProjectSource {
        route: manifest.route.clone().unwrap_or_else(|| format!("/{name}")),
        name: name.clone(),
        entry: folder,
        component,
        manifest,
    })
}

/// A `DIR/NAME.wasm` project: default settings.
fn one_file(name: ProjectName, file: &Path) -> ProjectSource {
    ProjectSource {
        route: format!("/{name}"),
        name,
        entry: file.to_path_buf(),
        component: file.to_path_buf(),
        manifest: Manifest::default(),
    }
}

/// A `DIR/NAME/` project: its manifest if there is one, and its component.
fn load_folder(name: ProjectName, dir: &Path) -> anyhow::Result<ProjectSource> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let manifest = if manifest_path.exists() {
        Manifest::load(&manifest_path)?
    } else {
        Manifest::default()
    };
    let component = match (&manifest.component, &manifest.oci) {
        (_, Some(reference)) => PathBuf::from(reference.to_string()),
        (Some(relative), None) => {
            let path = dir.join(relative);
            if !path.is_file() {
                bail!(
                    "{}: component `{}` does not exist in {}",
                    manifest_path.display(),
                    relative.display(),
                    dir.display()
                );
            }
            path
        }
        (None, None) => one_of(dir, wasm_files(dir)?)?,
    };
    Ok(ProjectSource {
        route: manifest.route.clone().unwrap_or_else(|| format!("/{name}")),
        name,
        entry: dir.to_path_buf(),
        component,
        manifest,
    })
}

/// The visible `*.wasm` files in `dir`, sorted. Hidden files (editor and
/// deploy temp files) are never components.
fn wasm_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("failed to read project folder {}", dir.display()))?
    {
        let path = entry
            .with_context(|| format!("failed to read project folder {}", dir.display()))?
            .path();
        let visible = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.starts_with('.'));
        if visible && path.extension().is_some_and(|ext| ext == "wasm") && path.is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The one component among `found` (the `*.wasm` files of `dir`); zero or
/// several is an error that says how to fix it.
fn one_of(dir: &Path, mut found: Vec<PathBuf>) -> anyhow::Result<PathBuf> {
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => bail!("{}: no .wasm component in the folder", dir.display()),
        _ => {
            let names: Vec<String> = found
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            bail!(
                "{}: several .wasm files ({}); name one with `component = \"…\"` in {MANIFEST_FILE}",
                dir.display(),
                names.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn write(path: &Path, contents: &str) {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("mkdir");
        }
        fs::write(path, contents).expect("write");
    }

    #[test]
    fn finds_folders_files_and_reports_problems() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        write(&root.join("a/app.wasm"), "");
        write(&root.join("b.wasm"), "");
        write(&root.join("c/one.wasm"), "");
        write(&root.join("c/two.wasm"), "");
        write(
            &root.join("c/wasmhost.toml"),
            "component = \"two.wasm\"\nroute = \"/see\"\n",
        );
        write(&root.join("d/wasmhost.toml"), "route = 5\n");
        write(&root.join("e/x.wasm"), "");
        write(&root.join("e/y.wasm"), "");
        write(&root.join("Bad.wasm"), "");
        write(&root.join("a.wasm"), "");
        write(&root.join(".hidden/x.wasm"), "");
        write(&root.join("README.md"), "");
        write(&root.join("empty/notes.txt"), "");

        let scan = scan(root).expect("scan");
        let names: Vec<&str> = scan.projects.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(scan.projects[0].component, root.join("a/app.wasm"));
        assert_eq!(scan.projects[0].route, "/a");
        assert_eq!(scan.projects[1].component, root.join("b.wasm"));
        assert_eq!(scan.projects[2].component, root.join("c/two.wasm"));
        assert_eq!(scan.projects[2].route, "/see");

        let failed: Vec<(String, String)> = scan
            .failed
            .iter()
            .map(|f| (f.name.to_string(), format!("{:#}", f.error)))
            .collect();
        assert_eq!(failed.len(), 3, "{failed:?}");
        assert_eq!(failed[0].0, "d");
        assert!(failed[0].1.contains("wasmhost.toml:1:"), "{}", failed[0].1);
        assert_eq!(failed[1].0, "e");
        assert!(
            failed[1].1.contains("several .wasm files (x.wasm, y.wasm)"),
            "{}",
            failed[1].1
        );
        assert_eq!(failed[2].0, "empty");
        assert!(
            failed[2].1.contains("no .wasm component"),
            "{}",
            failed[2].1
        );

        let skipped: Vec<String> = scan.skipped.iter().map(|s| s.reason.clone()).collect();
        assert_eq!(skipped.len(), 2, "{skipped:?}");
        assert!(skipped.iter().any(|r| r.contains("`Bad`")));
        assert!(skipped.iter().any(|r| r.contains("already defined by")));
    }

    #[test]
    fn missing_component_named_in_manifest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        write(
            &tmp.path().join("p/wasmhost.toml"),
            "component = \"gone.wasm\"\n",
        );
        let scan = scan(tmp.path()).expect("scan");
        let error = format!("{:#}", scan.failed[0].error);
        assert!(
            error.contains("component `gone.wasm` does not exist"),
            "{error}"
        );
    }

    #[test]
    fn find_and_deploy_target() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let name = |n: &str| ProjectName::parse(n).expect("valid");
        write(&root.join("f.wasm"), "");
        write(&root.join("d/x.wasm"), "");
        write(
            &root.join("m/wasmhost.toml"),
            "component = \"app.wasm\"\nroute = \"/mm\"\n",
        );
        assert_eq!(
            find(root, &name("f"))
                .expect("ok")
                .expect("found")
                .component,
            root.join("f.wasm")
        );
        assert_eq!(
            find(root, &name("d"))
                .expect("ok")
                .expect("found")
                .component,
            root.join("d/x.wasm")
        );
        assert!(
            find(root, &name("m")).is_err(),
            "component named in manifest is missing"
        );
        assert!(find(root, &name("new")).expect("ok").is_none());

        assert_eq!(
            deploy_target(root, &name("f"), None).expect("ok").component,
            root.join("f.wasm")
        );
        assert_eq!(
            deploy_target(root, &name("d"), None).expect("ok").component,
            root.join("d/x.wasm")
        );
        let m = deploy_target(root, &name("m"), None).expect("ok");
        assert_eq!(
            (m.component, m.route.as_str()),
            (root.join("m/app.wasm"), "/mm")
        );
        // A hidden leftover is not a component: the deploy target is NAME.wasm.
        write(&root.join("h/.old.wasm"), "");
        assert_eq!(
            deploy_target(root, &name("h"), None).expect("ok").component,
            root.join("h/h.wasm")
        );
        let new = deploy_target(root, &name("new"), None).expect("ok");
        assert_eq!(
            (new.component, new.entry),
            (root.join("new/new.wasm"), root.join("new"))
        );
    }

    #[test]
    fn unreadable_root_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = scan(&tmp.path().join("nope")).expect_err("missing dir");
        assert!(format!("{err:#}").contains("failed to read projects directory"));
    }
}
