//! The strategies directory in Jesse's own layout (`<Name>/__init__.py`), so an
//! existing Jesse project's `strategies/` works as is. Owns every file operation
//! on it: names and symlinks are confined to the directory, sources are bounded,
//! writes are atomic (temp file + rename) and serialised by a lock file, so
//! concurrent writers (threads, API processes) can never leave a torn file.
//! It never imports or runs strategy code.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::jesse::{STRATEGY_NAME_RULE, is_valid_strategy_name};
use http::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

pub const MAX_SOURCE_BYTES: usize = 256 * 1024;
const LOCK_FILE: &str = ".jesse-mcp-write.lock";

/// A strategy file as read from disk.
#[derive(Debug, Clone)]
pub struct StrategyFile {
    pub name: String,
    pub source: String,
    pub sha256: String,
    /// Modification time, ms since the epoch.
    pub modified_at: i64,
}

#[derive(Clone, Debug)]
pub struct StrategyDir {
    root: PathBuf,
}

pub fn sha256_hex(source: &str) -> String {
    hex::encode(Sha256::digest(source.as_bytes()))
}

pub fn check_name(name: &str) -> Result<(), ApiError> {
    if is_valid_strategy_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_strategy_name",
            format!(
                "'{}' is not a valid strategy name: {STRATEGY_NAME_RULE}",
                name.escape_debug()
            ),
        )
        .with_details(json!({"field": "name"})))
    }
}

pub fn check_size(source: &str) -> Result<(), ApiError> {
    if source.len() > MAX_SOURCE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "source_too_large",
            format!(
                "the strategy source is {} bytes; the limit is {MAX_SOURCE_BYTES} (256 KiB)",
                source.len()
            ),
        ));
    }
    Ok(())
}

fn io_error(context: &str, error: std::io::Error) -> ApiError {
    tracing::error!(error = %error, "{context}");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "a strategy file operation failed; see the service log",
    )
}

/// Strips the quotes an `If-Match`/`ETag` value may carry.
pub fn bare_etag(value: &str) -> &str {
    value.trim().trim_start_matches("W/").trim_matches('"')
}

impl StrategyDir {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn canonical_root(&self) -> Result<PathBuf, ApiError> {
        fs::create_dir_all(&self.root)
            .map_err(|e| io_error("creating the strategies directory", e))?;
        self.root
            .canonicalize()
            .map_err(|e| io_error("resolving the strategies directory", e))
    }

    /// `<root>/<name>/__init__.py`, refusing anything that resolves outside the root.
    fn file_path(&self, name: &str) -> Result<PathBuf, ApiError> {
        check_name(name)?;
        let root = self.canonical_root()?;
        let dir = root.join(name);
        let file = dir.join("__init__.py");
        for path in [&dir, &file] {
            if fs::symlink_metadata(path).is_ok() {
                let resolved = path.canonicalize().map_err(|_| escape_error(name))?;
                if !resolved.starts_with(&root) {
                    return Err(escape_error(name));
                }
            }
        }
        Ok(file)
    }

    pub fn names(&self) -> Result<Vec<String>, ApiError> {
        let root = self.canonical_root()?;
        let mut names: Vec<String> = fs::read_dir(&root)
            .map_err(|e| io_error("listing strategies", e))?
            .flatten()
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| is_valid_strategy_name(name))
            .filter(|name| self.file_path(name).is_ok_and(|f| f.is_file()))
            .collect();
        names.sort();
        Ok(names)
    }

    pub fn read(&self, name: &str) -> Result<Option<StrategyFile>, ApiError> {
        let path = self.file_path(name)?;
        let source = match fs::read(&path) {
            Ok(bytes) => String::from_utf8(bytes).map_err(|_| {
                ApiError::invalid(
                    "invalid_encoding",
                    format!("{name}/__init__.py is not UTF-8 text"),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("reading a strategy", e)),
        };
        let modified_at = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        Ok(Some(StrategyFile {
            name: name.to_string(),
            sha256: sha256_hex(&source),
            source,
            modified_at,
        }))
    }

    /// Creates or replaces a strategy atomically. With `if_match`, the current
    /// file must have that sha256 (412 otherwise); `if_match: "*"` requires that
    /// it exists. Returns the written file and whether it was created.
    pub fn write(
        &self,
        name: &str,
        source: &str,
        if_match: Option<&str>,
    ) -> Result<(StrategyFile, bool), ApiError> {
        check_size(source)?;
        let path = self.file_path(name)?;
        let _lock = self.lock()?;
        let current = self.read(name)?;
        check_precondition(name, current.as_ref(), if_match)?;
        let dir = path.parent().expect("file has a parent");
        fs::create_dir_all(dir).map_err(|e| io_error("creating a strategy folder", e))?;
        // Re-check after creating the folder: it must still be ours.
        self.file_path(name)?;
        let temp = dir.join(format!(".__init__.py.{}.tmp", ulid::Ulid::generate()));
        let written = (|| -> std::io::Result<()> {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&temp)?;
            file.write_all(source.as_bytes())?;
            file.sync_all()?;
            fs::rename(&temp, &path)?;
            File::open(dir)?.sync_all()
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_error("writing a strategy", e));
        }
        let file = self.read(name)?.expect("just written");
        Ok((file, current.is_none()))
    }

    /// Deletes a strategy's folder. With `if_match`, only if unchanged.
    pub fn delete(&self, name: &str, if_match: Option<&str>) -> Result<bool, ApiError> {
        let path = self.file_path(name)?;
        let _lock = self.lock()?;
        let current = self.read(name)?;
        if current.is_none() {
            return Ok(false);
        }
        check_precondition(name, current.as_ref(), if_match)?;
        let dir = path.parent().expect("file has a parent");
        if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(dir).map_err(|e| io_error("deleting a strategy link", e))?;
        } else {
            fs::remove_dir_all(dir).map_err(|e| io_error("deleting a strategy", e))?;
        }
        Ok(true)
    }

    /// An exclusive lock over check-and-write, across threads and processes.
    fn lock(&self) -> Result<File, ApiError> {
        let root = self.canonical_root()?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(root.join(LOCK_FILE))
            .map_err(|e| io_error("opening the strategies lock", e))?;
        file.lock()
            .map_err(|e| io_error("locking the strategies directory", e))?;
        Ok(file)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn escape_error(name: &str) -> ApiError {
    ApiError::invalid(
        "unsafe_path",
        format!(
            "strategy '{name}' resolves outside the strategies directory (a symlink?); refusing to use it"
        ),
    )
}

fn check_precondition(
    name: &str,
    current: Option<&StrategyFile>,
    if_match: Option<&str>,
) -> Result<(), ApiError> {
    let Some(expected) = if_match.map(bare_etag) else {
        return Ok(());
    };
    let matches = match current {
        Some(file) => expected == "*" || expected == file.sha256,
        None => false,
    };
    if matches {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::PRECONDITION_FAILED,
        "precondition_failed",
        format!(
            "strategy '{name}' changed since you read it (If-Match {expected} does not match the current version); read it again and reapply your edit"
        ),
    )
    .with_details(json!({"current_sha256": current.map(|f| f.sha256.clone())})))
}
