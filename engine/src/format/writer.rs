//! Streaming writer: tensors are written one at a time into `<out>.tmp-<pid>`; the header is
//! rewritten with checksums at the end and the file renamed into place. Dropping an unfinished
//! writer removes the temporary file, so a failed or cancelled conversion leaves nothing behind.

use super::{ALIGNMENT, FORMAT_VERSION, FormatError, Header, MAGIC, PREAMBLE_LEN, TensorEntry};
use crate::tensor::DType;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What will be written for one tensor; the full plan is known before the first byte so the
/// header (which precedes the data) can hold final offsets.
#[derive(Clone, Debug)]
pub struct TensorPlan {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub group_size: usize,
}

pub struct CellmWriter {
    final_path: PathBuf,
    header: Header,
    /// Authoritative tensor table (offsets, lengths, checksums as they are computed).
    entries: Vec<TensorEntry>,
    /// Index of the next tensor of the plan to be written.
    next: usize,
    /// Bytes written into the data section so far.
    data_pos: u64,
    header_len: u64,
    data_offset: u64,
    /// `None` once finished (or after a failed finish already cleaned up).
    out: Option<BufWriter<File>>,
    tmp_path: Option<PathBuf>,
}

/// Header space kept free beyond the initial JSON, so `fidelity` (and other small header fields)
/// can be filled in later without moving the data section.
fn header_slack(json_len: usize) -> usize {
    (json_len / 10).max(4096)
}

/// Rounds `n` up to the next multiple of [`ALIGNMENT`].
pub(crate) fn align_up(n: u64) -> Option<u64> {
    n.checked_add(ALIGNMENT - 1)
        .map(|v| v / ALIGNMENT * ALIGNMENT)
}

fn io_err(path: &Path, source: std::io::Error) -> FormatError {
    FormatError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The 32-byte preamble: magic, version, flags, header_len, data_offset (little-endian).
pub(crate) fn preamble(header_len: u64, data_offset: u64) -> [u8; PREAMBLE_LEN] {
    let mut p = [0u8; PREAMBLE_LEN];
    p[0..8].copy_from_slice(&MAGIC);
    p[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    p[12..16].copy_from_slice(&0u32.to_le_bytes());
    p[16..24].copy_from_slice(&header_len.to_le_bytes());
    p[24..32].copy_from_slice(&data_offset.to_le_bytes());
    p
}

/// Serializes `header` and pads it with ASCII spaces to exactly `header_len` bytes, or says why
/// it does not fit.
pub(crate) fn header_region(
    header: &Header,
    header_len: u64,
    path: &Path,
) -> Result<Vec<u8>, FormatError> {
    let mut json = serde_json::to_vec(header).map_err(|e| FormatError::Header {
        path: path.display().to_string(),
        what: format!("cannot serialize header: {e}"),
    })?;
    let len = json.len() as u64;
    if len > header_len {
        return Err(FormatError::Header {
            path: path.display().to_string(),
            what: format!(
                "header JSON is {len} bytes but only {header_len} bytes are reserved in the file"
            ),
        });
    }
    json.resize(header_len as usize, b' ');
    Ok(json)
}

/// The tensor table of `plan`: data offsets 64-aligned in plan order, float tensors with group
/// size 0, checksums at their widest (`u32::MAX`) until written. Also returns the data length.
/// Shared by [`CellmWriter::create`] and [`super::CellmFile::planned`].
pub(crate) fn lay_out(
    plan: Vec<TensorPlan>,
    shown: &str,
) -> Result<(Vec<TensorEntry>, u64), FormatError> {
    let mut entries = Vec::with_capacity(plan.len());
    let mut seen = std::collections::HashSet::with_capacity(plan.len());
    let mut cursor = 0u64;
    for p in plan {
        let tensor_err = |what: String| FormatError::Tensor {
            path: shown.to_string(),
            tensor: p.name.clone(),
            what,
        };
        if p.name.is_empty() {
            return Err(tensor_err("empty tensor name".into()));
        }
        if !seen.insert(p.name.clone()) {
            return Err(tensor_err("listed twice in the tensor plan".into()));
        }
        // Float tensors carry no group size: store 0 so the file has one spelling.
        let group_size = if p.dtype.is_quantized() {
            p.group_size
        } else {
            0
        };
        let byte_len = p
            .dtype
            .byte_len(&p.shape, group_size)
            .map_err(|e| tensor_err(e.to_string()))?;
        let offset = align_up(cursor).ok_or_else(|| tensor_err("offset overflows".into()))?;
        cursor = offset
            .checked_add(byte_len as u64)
            .ok_or_else(|| tensor_err("offset overflows".into()))?;
        entries.push(TensorEntry {
            name: p.name,
            dtype: p.dtype,
            shape: p.shape,
            offset,
            byte_len: byte_len as u64,
            group_size,
            // Widest value, so the final header (real checksums) is never longer than the
            // space reserved from this one.
            crc32: u32::MAX,
        });
    }
    Ok((entries, cursor))
}

impl CellmWriter {
    /// Creates the temporary file, lays out the tensor table from `plan` (offsets 64-aligned),
    /// and reserves header space (JSON plus slack so `fidelity` can be filled in later).
    /// `header.tensors` is ignored and replaced by the plan.
    pub fn create(
        path: &Path,
        mut header: Header,
        plan: Vec<TensorPlan>,
    ) -> Result<Self, FormatError> {
        let shown = path.display().to_string();
        let (entries, _) = lay_out(plan, &shown)?;
        header.tensors = entries.clone();

        let json_len = serde_json::to_vec(&header)
            .map_err(|e| FormatError::Header {
                path: shown.clone(),
                what: format!("cannot serialize header: {e}"),
            })?
            .len();
        let reserved = (json_len + header_slack(json_len)) as u64;
        // Choose header_len so the data section starts right after it, already aligned.
        let data_offset = align_up(PREAMBLE_LEN as u64 + reserved).ok_or(FormatError::Header {
            path: shown.clone(),
            what: "header too large".into(),
        })?;
        let header_len = data_offset - PREAMBLE_LEN as u64;

        let file_name = path.file_name().ok_or_else(|| FormatError::Io {
            path: shown.clone(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"),
        })?;
        let mut tmp_name = file_name.to_os_string();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp_path = path.with_file_name(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp_path)
            .map_err(|e| io_err(&tmp_path, e))?;
        crate::atomic_file::register_temp(&tmp_path);

        let mut writer = Self {
            final_path: path.to_path_buf(),
            header,
            entries,
            next: 0,
            data_pos: 0,
            header_len,
            data_offset,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp_path: Some(tmp_path),
        };
        // From here on, an error drops `writer`, which removes the temporary file.
        let region = header_region(&writer.header, header_len, &writer.final_path)?;
        writer.write_raw(&preamble(header_len, data_offset))?;
        writer.write_raw(&region)?;
        Ok(writer)
    }

    fn tmp_path(&self) -> &Path {
        self.tmp_path.as_deref().unwrap_or(&self.final_path)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), FormatError> {
        let tmp = self.tmp_path().to_path_buf();
        match self.out.as_mut() {
            Some(out) => out.write_all(bytes).map_err(|e| io_err(&tmp, e)),
            None => Err(io_err(
                &tmp,
                std::io::Error::other("writer is closed after an earlier write failed"),
            )),
        }
    }

    fn tensor_err(&self, tensor: &str, what: String) -> FormatError {
        FormatError::Tensor {
            path: self.final_path.display().to_string(),
            tensor: tensor.to_string(),
            what,
        }
    }

    /// Writes the bytes of the next tensor of the plan (in plan order; exact length required).
    pub fn write_tensor(&mut self, name: &str, bytes: &[u8]) -> Result<(), FormatError> {
        let Some(entry) = self.entries.get(self.next) else {
            return Err(self.tensor_err(
                name,
                format!(
                    "not expected: all {} planned tensors are already written",
                    self.entries.len()
                ),
            ));
        };
        if entry.name != name {
            let what = format!(
                "written out of order: the plan expects '{}' next",
                entry.name
            );
            return Err(self.tensor_err(name, what));
        }
        if bytes.len() as u64 != entry.byte_len {
            let what = format!(
                "{} {:?} needs {} bytes, got {}",
                entry.dtype,
                entry.shape,
                entry.byte_len,
                bytes.len()
            );
            return Err(self.tensor_err(name, what));
        }
        let pad = (entry.offset - self.data_pos) as usize;
        let offset = entry.offset;
        let written = self
            .write_raw(&[0u8; ALIGNMENT as usize][..pad])
            .and_then(|()| self.write_raw(bytes));
        if let Err(e) = written {
            // A partial write leaves the position unknown: close the writer so that no later
            // call can produce a misaligned file (Drop still removes the temporary file).
            self.out = None;
            return Err(e);
        }
        self.entries[self.next].crc32 = crc32fast::hash(bytes);
        self.data_pos = offset + bytes.len() as u64;
        self.next += 1;
        Ok(())
    }

    /// Names of the tensors still to be written, in plan order.
    pub fn remaining(&self) -> impl Iterator<Item = &str> {
        self.entries[self.next..].iter().map(|e| e.name.as_str())
    }

    /// The header as it will be written (e.g. to set `fidelity` before [`CellmWriter::finish`]).
    /// Its `tensors` table is replaced by the writer's own at [`CellmWriter::finish`].
    pub fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }

    /// Writes the final header, syncs, and renames the temporary file to its final path.
    pub fn finish(mut self) -> Result<PathBuf, FormatError> {
        if let Some(missing) = self.entries.get(self.next) {
            let what = format!(
                "not written ({} of {} planned tensors are missing)",
                self.entries.len() - self.next,
                self.entries.len()
            );
            return Err(self.tensor_err(&missing.name.clone(), what));
        }
        let tmp = self.tmp_path().to_path_buf();
        self.header.tensors = self.entries.clone();
        let region = header_region(&self.header, self.header_len, &self.final_path)?;
        let out = self.out.take().ok_or_else(|| {
            io_err(
                &tmp,
                std::io::Error::other("writer is closed after an earlier write failed"),
            )
        })?;
        let mut file = out.into_inner().map_err(|e| io_err(&tmp, e.into_error()))?;
        file.seek(SeekFrom::Start(PREAMBLE_LEN as u64))
            .and_then(|_| file.write_all(&region))
            .and_then(|_| file.sync_all())
            .map_err(|e| io_err(&tmp, e))?;
        debug_assert_eq!(
            file.metadata().map(|m| m.len()).ok(),
            Some(self.data_offset + self.data_pos)
        );
        drop(file);
        std::fs::rename(&tmp, &self.final_path).map_err(|e| io_err(&self.final_path, e))?;
        crate::atomic_file::unregister_temp(&tmp);
        self.tmp_path = None;
        sync_parent_dir(&self.final_path);
        Ok(self.final_path.clone())
    }
}

/// Makes the rename durable; best effort (not every platform can open a directory).
fn sync_parent_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

impl Drop for CellmWriter {
    fn drop(&mut self) {
        // Close before removing (required on Windows).
        drop(self.out.take());
        if let Some(tmp) = self.tmp_path.take() {
            let _ = std::fs::remove_file(&tmp);
            crate::atomic_file::unregister_temp(&tmp);
        }
    }
}

/// Rewrites the header of an existing file in place: `f` edits it, and the new JSON must fit in
/// the space reserved when the file was written. The tensor table may not change (the data would
/// no longer match). The fixed-size header region is written with one positioned write and synced;
/// the data section is never touched.
pub fn update_header(
    path: impl AsRef<Path>,
    f: impl FnOnce(&mut Header),
) -> Result<(), FormatError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let (mut header, header_len) = {
        let file = super::CellmFile::open(path)?;
        (file.header().clone(), file.header_len())
    };
    let before = header.tensors.clone();
    f(&mut header);
    if header.tensors != before {
        return Err(FormatError::Header {
            path: shown,
            what: "update_header cannot change the tensor table".into(),
        });
    }
    let region = header_region(&header, header_len, path).map_err(|e| match e {
        FormatError::Header { path, what } => FormatError::Header {
            path,
            what: format!("{what}; the file must be rewritten (re-run the conversion)"),
        },
        other => other,
    })?;
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    file.seek(SeekFrom::Start(PREAMBLE_LEN as u64))
        .and_then(|_| file.write_all(&region))
        .and_then(|_| file.sync_all())
        .map_err(|e| io_err(path, e))
}
