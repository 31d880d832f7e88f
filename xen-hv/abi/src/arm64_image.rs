//! The Linux arm64 `Image` header (Documentation/arm64/booting.rst): how a domain builder recognises a kernel
//! image and where to place it. All fields are little-endian.

/// Header size.
pub const HEADER: usize = 64;
/// `"ARM\x64"` at offset 0x38.
pub const MAGIC: u32 = 0x644d_5241;

/// Why an image cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    /// Shorter than the header or without the magic.
    NotAnImage,
    /// A big-endian kernel.
    BigEndian,
    /// The effective size is smaller than the file.
    BadSize,
}

impl core::fmt::Display for ImageError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotAnImage => "the image has no arm64 Image header",
            Self::BigEndian => "the arm64 Image is big-endian",
            Self::BadSize => "the arm64 Image's size field is smaller than the file",
        })
    }
}

/// The fields a loader needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm64Image {
    /// Offset from a 2 MiB-aligned base at which the image must be placed.
    pub text_offset: u64,
    /// Bytes the image occupies once loaded, BSS included (at least the file size).
    pub image_size: u64,
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Reads the header at the start of `data` (the whole file).
pub fn parse(data: &[u8]) -> Result<Arm64Image, ImageError> {
    if data.len() < HEADER || u32::from_le_bytes([data[56], data[57], data[58], data[59]]) != MAGIC
    {
        return Err(ImageError::NotAnImage);
    }
    let flags = le64(data, 24);
    if flags & 1 != 0 {
        return Err(ImageError::BigEndian);
    }
    // Before Linux 3.17 image_size was 0 and text_offset 0x80000 implied.
    let (text_offset, image_size) = match le64(data, 16) {
        0 => (0x8_0000, data.len() as u64),
        n => (le64(data, 8), n),
    };
    if image_size < data.len() as u64 {
        return Err(ImageError::BadSize);
    }
    Ok(Arm64Image {
        text_offset,
        image_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, size: u64, flags: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[24..32].copy_from_slice(&flags.to_le_bytes());
        h[56..60].copy_from_slice(&MAGIC.to_le_bytes());
        h
    }

    #[test]
    fn reads_the_header() {
        assert_eq!(
            parse(&header(0, 0x20_0000, 0xa)),
            Ok(Arm64Image {
                text_offset: 0,
                image_size: 0x20_0000
            })
        );
        assert_eq!(
            parse(&header(0x1234, 0, 0)),
            Ok(Arm64Image {
                text_offset: 0x8_0000,
                image_size: 4096
            })
        );
        assert_eq!(parse(&header(0, 0x1000, 1)), Err(ImageError::BigEndian));
        assert_eq!(parse(&header(0, 0x800, 0)), Err(ImageError::BadSize));
        assert_eq!(parse(&[0u8; 63]), Err(ImageError::NotAnImage));
        assert_eq!(parse(&[0u8; 4096]), Err(ImageError::NotAnImage));
    }
}
