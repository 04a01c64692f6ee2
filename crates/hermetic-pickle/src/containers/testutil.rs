//! A tiny zip writer for tests, with knobs to break every rule the scanner
//! checks.

use std::io::Write;

/// One entry to write.
#[derive(Clone, Debug)]
pub struct E {
    pub name: Vec<u8>,
    pub data: Vec<u8>,
    pub method: u16,
    pub flags: u16,
    /// Central CRC override.
    pub crc: Option<u32>,
    pub local_crc: Option<u32>,
    pub local_method: Option<u16>,
    pub local_name: Option<Vec<u8>>,
    /// Write a signed data descriptor after the data (with flag bit 3, the
    /// local CRC and sizes are then zero, as torch writes them).
    pub descriptor: bool,
}

impl E {
    pub fn stored(name: &str, data: &[u8]) -> E {
        E {
            name: name.as_bytes().to_vec(),
            data: data.to_vec(),
            method: 0,
            flags: 0,
            crc: None,
            local_crc: None,
            local_method: None,
            local_name: None,
            descriptor: false,
        }
    }

    pub fn deflated(name: &str, data: &[u8]) -> E {
        E {
            method: 8,
            ..E::stored(name, data)
        }
    }

    /// An entry as `torch.save` writes it: stored, flags 0x0808, data descriptor.
    pub fn torch(name: &str, data: &[u8]) -> E {
        E {
            flags: 0x0808,
            descriptor: true,
            ..E::stored(name, data)
        }
    }
}

/// Archive-level knobs.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    pub prefix: Vec<u8>,
    pub suffix: Vec<u8>,
    /// The order of entries in the central directory.
    pub central_order: Option<Vec<usize>>,
    /// Local header offsets the central directory claims.
    pub central_offsets: Option<Vec<u64>>,
    /// The entry count the end record claims.
    pub count: Option<u16>,
    /// Write ZIP64 end records, as torch always does.
    pub zip64: bool,
    /// Offsets count from the start of the file (prefix included) rather
    /// than from the start of the archive.
    pub absolute: bool,
    /// Bytes written after the record of the entry with the same index.
    pub after: Vec<Vec<u8>>,
    /// Bytes between the central directory and the end records.
    pub before_end: Vec<u8>,
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Writes an archive.
pub fn zip_with(entries: &[E], o: &Opts) -> Vec<u8> {
    let mut out = o.prefix.clone();
    let shift = if o.absolute { 0 } else { o.prefix.len() as u64 };
    let mut locals = Vec::new();
    let mut packed = Vec::new();
    for e in entries {
        let body = if e.method == 8 {
            deflate(&e.data)
        } else {
            e.data.clone()
        };
        let crc = e.crc.unwrap_or_else(|| crc32fast::hash(&e.data));
        let local = out.len() as u64 - shift;
        locals.push(local);
        let name = e.local_name.clone().unwrap_or_else(|| e.name.clone());
        let zero = e.flags & 0x0008 != 0;
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&20u16.to_le_bytes());
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&e.local_method.unwrap_or(e.method).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        let (lcrc, lcs, lus) = if zero {
            (0, 0, 0)
        } else {
            (
                e.local_crc.unwrap_or(crc),
                body.len() as u32,
                e.data.len() as u32,
            )
        };
        out.extend_from_slice(&lcrc.to_le_bytes());
        out.extend_from_slice(&lcs.to_le_bytes());
        out.extend_from_slice(&lus.to_le_bytes());
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&name);
        out.extend_from_slice(&body);
        if e.descriptor {
            out.extend_from_slice(b"PK\x07\x08");
            out.extend_from_slice(&crc.to_le_bytes());
            out.extend_from_slice(&(body.len() as u32).to_le_bytes());
            out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        }
        packed.push((body.len() as u32, crc));
        if let Some(extra) = o.after.get(locals.len() - 1) {
            out.extend_from_slice(extra);
        }
    }
    let cd_start = out.len() as u64 - shift;
    let order: Vec<usize> = o
        .central_order
        .clone()
        .unwrap_or_else(|| (0..entries.len()).collect());
    for &i in &order {
        let e = &entries[i];
        let (cs, crc) = packed[i];
        let local = o.central_offsets.as_ref().map_or(locals[i], |v| v[i]);
        out.extend_from_slice(b"PK\x01\x02");
        out.extend_from_slice(&[20, 3, 20, 0]);
        out.extend_from_slice(&e.flags.to_le_bytes());
        out.extend_from_slice(&e.method.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&cs.to_le_bytes());
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&(local as u32).to_le_bytes());
        out.extend_from_slice(&e.name);
    }
    let cd_size = out.len() as u64 - shift - cd_start;
    let n = entries.len() as u64;
    let count = o.count.map_or(n, u64::from);
    out.extend_from_slice(&o.before_end);
    if o.zip64 {
        let rec = out.len() as u64;
        out.extend_from_slice(b"PK\x06\x06");
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[30, 3, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(&cd_size.to_le_bytes());
        out.extend_from_slice(&cd_start.to_le_bytes());
        out.extend_from_slice(b"PK\x06\x07");
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&rec.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
    }
    out.extend_from_slice(b"PK\x05\x06\0\0\0\0");
    out.extend_from_slice(&(count as u16).to_le_bytes());
    out.extend_from_slice(&(count as u16).to_le_bytes());
    out.extend_from_slice(&(cd_size as u32).to_le_bytes());
    out.extend_from_slice(&(cd_start as u32).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&o.suffix);
    out
}
