//! The static library writer: object files in, `libNAME.a` bytes out.
//!
//! The archive is in the GNU/SysV `ar` format with a symbol table (the `/` member), which is what
//! GNU ld, gold, lld and `cc` expect on Linux. Every header field that could vary between builds is
//! fixed (mtime 0, uid/gid 0, mode 644), so the same objects always give the same bytes.

use std::io::Cursor;

use ar_archive_writer::{
    write_archive_to_stream, ArchiveKind, NewArchiveMember, DEFAULT_OBJECT_READER,
};

/// Writes an archive of `members` (file name, object bytes), in order, with a symbol table built
/// from the objects' defined global symbols.
///
/// Fails only if a member cannot be parsed as an object file or is too large for the format.
pub fn write_archive(members: &[(String, Vec<u8>)]) -> std::io::Result<Vec<u8>> {
    let new: Vec<NewArchiveMember<'_>> = members
        .iter()
        .map(|(name, bytes)| {
            let mut m =
                NewArchiveMember::new(bytes.as_slice(), &DEFAULT_OBJECT_READER, name.clone());
            // `new` already uses these values; set them anyway since determinism is the point.
            m.mtime = 0;
            m.uid = 0;
            m.gid = 0;
            m.perms = 0o644;
            m
        })
        .collect();
    let mut out = Cursor::new(Vec::new());
    write_archive_to_stream(&mut out, &new, ArchiveKind::Gnu, false, None)?;
    Ok(out.into_inner())
}
