//! The local copy of the last applied document (`config_source.cache_file`): a node whose
//! etcd is down at start-up serves from it. The file is the document itself, after one
//! comment line naming its revision, so `portcullis check` reads it like any
//! configuration file. It is written to a temporary file and renamed over the old one,
//! so a crash mid-write leaves the previous copy whole.

use std::io::Write;
use std::path::Path;

use super::Document;

/// The first line of a cache file; the revision follows it.
const HEADER: &str = "# portcullis configuration cache, etcd revision ";

/// Writes `document` to `path` atomically (temporary file, fsync, rename).
pub fn write(path: &Path, document: &Document) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write the cache file {}: {e}", path.display());
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".tmp");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary).map_err(fail)?;
    file.write_all(format!("{HEADER}{}\n", document.revision).as_bytes())
        .and_then(|()| file.write_all(document.text.as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(fail)?;
    std::fs::rename(&temporary, path).map_err(fail)
}

/// The document cached at `path`; `None` when there is no cache file.
pub fn read(path: &Path) -> Result<Option<Document>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(format!(
                "cannot read the cache file {}: {e}",
                path.display()
            ))
        }
    };
    let invalid = || format!("{} is not a portcullis cache file", path.display());
    let (first, rest) = text.split_once('\n').ok_or_else(invalid)?;
    let revision = first
        .strip_prefix(HEADER)
        .and_then(|revision| revision.trim().parse::<i64>().ok())
        .ok_or_else(invalid)?;
    Ok(Some(Document {
        text: rest.to_string(),
        revision,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_document_reads_back_and_a_foreign_file_is_refused() {
        let dir = std::env::temp_dir().join(format!("portcullis-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("cache.yaml");
        assert_eq!(read(&path), Ok(None));
        let document = Document {
            text: "listeners: []\n".into(),
            revision: 42,
        };
        write(&path, &document).expect("written");
        assert_eq!(read(&path), Ok(Some(document)));
        std::fs::write(&path, "listeners: []\n").expect("foreign");
        assert!(read(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
