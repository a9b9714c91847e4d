//! Rendering one frame to a consumer image (PS3.18 §8.3.5): modality LUT, VOI LUT or window,
//! MONOCHROME1 inversion, palette and YBR conversion, viewport crop and scale, JPEG/PNG.

use std::path::Path;

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::{
    PhotometricInterpretation, PixelDecoder, PixelRepresentation, PlanarConfiguration,
    VoiLutFunction,
};

use crate::error::{ImagingError, ImagingErrorKind, ImagingResult};
use crate::open::{number_of_frames, open_object};
use crate::resize::{Raster, crop_and_scale};
use crate::syntax::can_decode;

/// Output media type of a rendered resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// `image/jpeg` (baseline, 8-bit).
    Jpeg,
    /// `image/png` (8-bit gray or RGB).
    Png,
}

impl ImageFormat {
    /// Returns the media type.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Jpeg => "image/jpeg",
            Self::Png => "image/png",
        }
    }
}

/// The VOI LUT function of the `window` parameter (PS3.3 §C.11.2.1.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoiFunction {
    Linear,
    LinearExact,
    Sigmoid,
}

/// A window given by the client: `window=center,width,function`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowParam {
    pub center: f64,
    pub width: f64,
    pub function: VoiFunction,
}

/// The source region of the `viewport` parameter, in image pixels; a negative width or height
/// flips the image along that axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceRect {
    pub x: i64,
    pub y: i64,
    pub width: i64,
    pub height: i64,
}

/// `viewport=vw,vh[,sx,sy,sw,sh]`: the source region (whole image by default) is scaled to fit
/// inside `width` x `height`, keeping its aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Viewport {
    pub width: u32,
    pub height: u32,
    pub source: Option<SourceRect>,
}

/// How to render a frame.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderParams {
    /// Overrides the dataset's window; ignored for color images.
    pub window: Option<WindowParam>,
    pub viewport: Option<Viewport>,
    /// JPEG quality, 1 to 100.
    pub quality: u8,
    pub format: ImageFormat,
}

impl Default for RenderParams {
    fn default() -> Self {
        Self {
            window: None,
            viewport: None,
            quality: 90,
            format: ImageFormat::Jpeg,
        }
    }
}

/// Renders frame `frame_index` (0-based) of the Part 10 file at `path`.
pub fn render_file(path: &Path, frame_index: u32, params: &RenderParams) -> ImagingResult<Vec<u8>> {
    let object = open_object(path)?;
    render_object(&object, frame_index, params)
}

/// Renders frame `frame_index` (0-based) of an object to JPEG or PNG bytes.
pub fn render_object(
    object: &DefaultDicomObject,
    frame_index: u32,
    params: &RenderParams,
) -> ImagingResult<Vec<u8>> {
    let raster = decode_to_raster(object, frame_index, params.window.as_ref())?;
    let raster = match &params.viewport {
        Some(viewport) => crop_and_scale(&raster, viewport)?,
        None => raster,
    };
    encode(&raster, params)
}

fn decode_to_raster(
    object: &DefaultDicomObject,
    frame_index: u32,
    window: Option<&WindowParam>,
) -> ImagingResult<Raster> {
    if object.get(tags::PIXEL_DATA).is_none() {
        return Err(ImagingError::new(
            ImagingErrorKind::NotAnImage,
            "the instance has no Pixel Data (7FE0,0010) to render",
        ));
    }
    let ts_uid = object
        .meta()
        .transfer_syntax()
        .trim_end_matches('\0')
        .to_owned();
    if !can_decode(&ts_uid) {
        return Err(ImagingError::new(
            ImagingErrorKind::UnsupportedTransferSyntax,
            format!("pixel data in transfer syntax {ts_uid} cannot be decoded by this server"),
        ));
    }
    let num_frames = number_of_frames(object);
    if frame_index >= num_frames {
        return Err(ImagingError::new(
            ImagingErrorKind::FrameOutOfRange,
            format!(
                "frame {} does not exist: the instance has {num_frames} frame(s)",
                frame_index + 1
            ),
        ));
    }
    let photometric =
        string_attribute(object, tags::PHOTOMETRIC_INTERPRETATION).unwrap_or_default();
    if photometric == "YBR_FULL_422" && !crate::syntax::is_encapsulated(&ts_uid) {
        return native_ybr_422(object, frame_index);
    }
    let decoded = object
        .decode_pixel_data_frame(frame_index)
        .map_err(|error| {
            ImagingError::with_source(
                ImagingErrorKind::CannotTranscode,
                format!(
                    "pixel data of frame {} in transfer syntax {ts_uid} could not be decoded",
                    frame_index + 1
                ),
                error,
            )
        })?;
    let width = decoded.columns() as usize;
    let height = decoded.rows() as usize;
    let num_pixels = width * height;
    let samples_per_pixel = decoded.samples_per_pixel() as usize;
    let bits_allocated = decoded.bits_allocated();
    let bits_stored = decoded.bits_stored().clamp(1, 32);
    let signed = decoded.pixel_representation() == PixelRepresentation::Signed;
    let data = decoded.data();
    if num_pixels == 0 {
        return Err(ImagingError::new(
            ImagingErrorKind::UnsupportedImage,
            "the image has zero rows or columns",
        ));
    }

    if samples_per_pixel == 3 {
        let planar = decoded.planar_configuration() == PlanarConfiguration::PixelFirst;
        let samples = read_samples(data, bits_allocated, num_pixels * 3, 32, false)?;
        let shift = bits_stored.saturating_sub(8);
        let mut rgb = Vec::with_capacity(num_pixels * 3);
        for pixel in 0..num_pixels {
            for channel in 0..3 {
                let index = if planar {
                    channel * num_pixels + pixel
                } else {
                    pixel * 3 + channel
                };
                let value = if bits_allocated == 8 {
                    samples[index]
                } else {
                    samples[index] >> shift
                };
                rgb.push(value.clamp(0, 255) as u8);
            }
        }
        let is_ybr = matches!(
            decoded.photometric_interpretation(),
            PhotometricInterpretation::YbrFull | PhotometricInterpretation::YbrFull422
        );
        if is_ybr {
            ybr_to_rgb_in_place(&mut rgb);
        }
        return Ok(Raster {
            width,
            height,
            channels: 3,
            pixels: rgb,
        });
    }
    if samples_per_pixel != 1 {
        return Err(ImagingError::new(
            ImagingErrorKind::UnsupportedImage,
            format!("images with {samples_per_pixel} samples per pixel are not rendered"),
        ));
    }

    if bits_allocated == 1 {
        // dicom-pixeldata expands single-bit frames to one byte per pixel (0 or 255).
        let pixels: Vec<u8> = data.iter().take(num_pixels).copied().collect();
        if pixels.len() < num_pixels {
            return Err(truncated());
        }
        return Ok(Raster {
            width,
            height,
            channels: 1,
            pixels,
        });
    }
    let stored = read_samples(data, bits_allocated, num_pixels, bits_stored, signed)?;

    if matches!(
        decoded.photometric_interpretation(),
        PhotometricInterpretation::PaletteColor
    ) {
        let pixels = apply_palette(object, &stored)?;
        return Ok(Raster {
            width,
            height,
            channels: 3,
            pixels,
        });
    }

    let rescale = decoded
        .rescale()
        .ok()
        .and_then(|rescales| rescales.first().copied());
    let (slope, intercept) =
        rescale.map_or((1.0, 0.0), |rescale| (rescale.slope, rescale.intercept));
    let slope = if slope == 0.0 || !slope.is_finite() {
        1.0
    } else {
        slope
    };
    let values: Vec<f64> = stored
        .iter()
        .map(|value| *value as f64 * slope + intercept)
        .collect();

    let chosen_window = window.copied().or_else(|| {
        let dataset_window = decoded
            .window()
            .ok()
            .flatten()
            .and_then(|windows| windows.first().copied())?;
        if dataset_window.width.is_nan() || dataset_window.width <= 0.0 {
            return None;
        }
        let function = match decoded
            .voi_lut_function()
            .ok()
            .flatten()
            .and_then(|functions| functions.first().copied())
        {
            Some(VoiLutFunction::LinearExact) => VoiFunction::LinearExact,
            Some(VoiLutFunction::Sigmoid) => VoiFunction::Sigmoid,
            _ => VoiFunction::Linear,
        };
        Some(WindowParam {
            center: dataset_window.center,
            width: dataset_window.width,
            function,
        })
    });
    let window = chosen_window.unwrap_or_else(|| min_max_window(&values));
    let invert = matches!(
        decoded.photometric_interpretation(),
        PhotometricInterpretation::Monochrome1
    );
    let pixels = values
        .iter()
        .map(|value| {
            let level = apply_window(*value, &window);
            if invert { 255 - level } else { level }
        })
        .collect();
    Ok(Raster {
        width,
        height,
        channels: 1,
        pixels,
    })
}

fn truncated() -> ImagingError {
    ImagingError::new(
        ImagingErrorKind::CannotTranscode,
        "the pixel data is shorter than its rows, columns and bit depth require",
    )
}

/// Reads `count` samples of `bits_allocated` bits (little endian), masked to `bits_stored` and
/// sign-extended when `signed`.
fn read_samples(
    data: &[u8],
    bits_allocated: u16,
    count: usize,
    bits_stored: u16,
    signed: bool,
) -> ImagingResult<Vec<i64>> {
    let bytes_per_sample = match bits_allocated {
        8 => 1,
        16 => 2,
        32 => 4,
        other => {
            return Err(ImagingError::new(
                ImagingErrorKind::UnsupportedImage,
                format!("Bits Allocated {other} is not rendered"),
            ));
        }
    };
    if data.len() < count * bytes_per_sample {
        return Err(truncated());
    }
    let bits_stored = u32::from(bits_stored.min(bits_allocated));
    let mask: u64 = if bits_stored >= 64 {
        u64::MAX
    } else {
        (1u64 << bits_stored) - 1
    };
    let sign_bit = 1u64 << (bits_stored - 1);
    Ok(data
        .chunks_exact(bytes_per_sample)
        .take(count)
        .map(|chunk| {
            let raw = match chunk.len() {
                1 => u64::from(chunk[0]),
                2 => u64::from(u16::from_le_bytes([chunk[0], chunk[1]])),
                _ => u64::from(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]])),
            } & mask;
            if signed && raw & sign_bit != 0 {
                raw as i64 - (mask as i64 + 1)
            } else {
                raw as i64
            }
        })
        .collect())
}

fn min_max_window(values: &[f64]) -> WindowParam {
    let (min, max) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(min, max), value| {
            (min.min(*value), max.max(*value))
        });
    if !min.is_finite() || !max.is_finite() || max <= min {
        return WindowParam {
            center: min.max(0.0),
            width: 1.0,
            function: VoiFunction::LinearExact,
        };
    }
    WindowParam {
        center: (min + max) / 2.0,
        width: max - min,
        function: VoiFunction::LinearExact,
    }
}

/// Maps a modality value to 0..=255 with a VOI window (PS3.3 §C.11.2.1.2).
fn apply_window(value: f64, window: &WindowParam) -> u8 {
    let center = window.center;
    let width = window.width;
    let normalized = match window.function {
        VoiFunction::Linear => {
            let width_minus_one = (width - 1.0).max(f64::MIN_POSITIVE);
            if value <= center - 0.5 - width_minus_one / 2.0 {
                0.0
            } else if value > center - 0.5 + width_minus_one / 2.0 {
                1.0
            } else {
                (value - (center - 0.5)) / width_minus_one + 0.5
            }
        }
        VoiFunction::LinearExact => {
            if value <= center - width / 2.0 {
                0.0
            } else if value > center + width / 2.0 {
                1.0
            } else {
                (value - center) / width + 0.5
            }
        }
        VoiFunction::Sigmoid => 1.0 / (1.0 + (-4.0 * (value - center) / width).exp()),
    };
    (normalized.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn ybr_to_rgb_in_place(pixels: &mut [u8]) {
    for pixel in pixels.chunks_exact_mut(3) {
        let y = f64::from(pixel[0]);
        let cb = f64::from(pixel[1]) - 128.0;
        let cr = f64::from(pixel[2]) - 128.0;
        let red = y + 1.402 * cr;
        let green = y - 0.344_136 * cb - 0.714_136 * cr;
        let blue = y + 1.772 * cb;
        pixel[0] = red.round().clamp(0.0, 255.0) as u8;
        pixel[1] = green.round().clamp(0.0, 255.0) as u8;
        pixel[2] = blue.round().clamp(0.0, 255.0) as u8;
    }
}

/// Native YBR_FULL_422 (PS3.3 §C.7.6.3.1.2): each pair of pixels is stored as Y1 Y2 Cb Cr.
fn native_ybr_422(object: &DefaultDicomObject, frame_index: u32) -> ImagingResult<Raster> {
    let width = int_attribute(object, tags::COLUMNS).unwrap_or(0) as usize;
    let height = int_attribute(object, tags::ROWS).unwrap_or(0) as usize;
    let bits_allocated = int_attribute(object, tags::BITS_ALLOCATED).unwrap_or(8);
    if bits_allocated != 8 || width == 0 || height == 0 {
        return Err(ImagingError::new(
            ImagingErrorKind::UnsupportedImage,
            "only 8-bit YBR_FULL_422 native pixel data is rendered",
        ));
    }
    let element = object.get(tags::PIXEL_DATA).ok_or_else(truncated)?;
    let bytes = element.to_bytes().map_err(|_| truncated())?;
    let frame_size = width.div_ceil(2) * 4 * height;
    let start = frame_size * frame_index as usize;
    let frame = bytes.get(start..start + frame_size).ok_or_else(truncated)?;
    let mut pixels = Vec::with_capacity(width * height * 3);
    for row in 0..height {
        let row_bytes = &frame[row * width.div_ceil(2) * 4..(row + 1) * width.div_ceil(2) * 4];
        for column in 0..width {
            let pair = &row_bytes[(column / 2) * 4..(column / 2) * 4 + 4];
            pixels.extend_from_slice(&[pair[column % 2], pair[2], pair[3]]);
        }
    }
    ybr_to_rgb_in_place(&mut pixels);
    Ok(Raster {
        width,
        height,
        channels: 3,
        pixels,
    })
}

/// Maps stored values through the Red, Green and Blue Palette Color LUTs (PS3.3 §C.7.6.3.1.5).
fn apply_palette(object: &DefaultDicomObject, stored: &[i64]) -> ImagingResult<Vec<u8>> {
    let missing = || {
        ImagingError::new(
            ImagingErrorKind::UnsupportedImage,
            "PALETTE COLOR image without usable palette LUTs",
        )
    };
    let mut luts = Vec::with_capacity(3);
    for (descriptor_tag, data_tag) in [
        (
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::RED_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::GREEN_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
        (
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DESCRIPTOR,
            tags::BLUE_PALETTE_COLOR_LOOKUP_TABLE_DATA,
        ),
    ] {
        let descriptor: Vec<i64> = object
            .get(descriptor_tag)
            .and_then(|element| element.to_multi_int::<i64>().ok())
            .filter(|values| values.len() == 3)
            .ok_or_else(missing)?;
        let num_entries = if descriptor[0] <= 0 {
            65536
        } else {
            descriptor[0] as usize
        };
        // The first mapped value is US or SS depending on Pixel Representation.
        let first_mapped = descriptor[1];
        let bits = descriptor[2];
        let bytes = object
            .get(data_tag)
            .and_then(|element| element.to_bytes().ok())
            .ok_or_else(missing)?;
        let entries: Vec<u8> = if bytes.len() >= num_entries * 2 {
            bytes
                .chunks_exact(2)
                .take(num_entries)
                .map(|word| {
                    let entry = u16::from_le_bytes([word[0], word[1]]);
                    if bits > 8 {
                        (entry >> 8) as u8
                    } else {
                        entry as u8
                    }
                })
                .collect()
        } else if bytes.len() >= num_entries {
            bytes[..num_entries].to_vec()
        } else {
            return Err(missing());
        };
        luts.push((first_mapped, entries));
    }
    let mut rgb = Vec::with_capacity(stored.len() * 3);
    for value in stored {
        for (first_mapped, entries) in &luts {
            let index = (value - first_mapped).clamp(0, entries.len() as i64 - 1) as usize;
            rgb.push(entries[index]);
        }
    }
    Ok(rgb)
}

fn string_attribute(object: &DefaultDicomObject, tag: Tag) -> Option<String> {
    object
        .get(tag)
        .and_then(|element| element.to_str().ok())
        .map(|value| {
            value
                .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                .to_owned()
        })
}

fn int_attribute(object: &DefaultDicomObject, tag: Tag) -> Option<u32> {
    object
        .get(tag)
        .and_then(|element| element.to_int::<u32>().ok())
}

fn encode(raster: &Raster, params: &RenderParams) -> ImagingResult<Vec<u8>> {
    let encode_error = |error: &dyn std::fmt::Display| {
        ImagingError::new(
            ImagingErrorKind::UnsupportedImage,
            format!("the rendered image could not be encoded: {error}"),
        )
    };
    let mut output = Vec::new();
    match params.format {
        ImageFormat::Jpeg => {
            let width = u16::try_from(raster.width)
                .map_err(|_| encode_error(&"wider than 65535 pixels"))?;
            let height = u16::try_from(raster.height)
                .map_err(|_| encode_error(&"taller than 65535 pixels"))?;
            let color = if raster.channels == 3 {
                jpeg_encoder::ColorType::Rgb
            } else {
                jpeg_encoder::ColorType::Luma
            };
            jpeg_encoder::Encoder::new(&mut output, params.quality.clamp(1, 100))
                .encode(&raster.pixels, width, height, color)
                .map_err(|error| encode_error(&error))?;
        }
        ImageFormat::Png => {
            let mut encoder =
                png::Encoder::new(&mut output, raster.width as u32, raster.height as u32);
            encoder.set_color(if raster.channels == 3 {
                png::ColorType::Rgb
            } else {
                png::ColorType::Grayscale
            });
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder
                .write_header()
                .map_err(|error| encode_error(&error))?;
            writer
                .write_image_data(&raster.pixels)
                .map_err(|error| encode_error(&error))?;
            writer.finish().map_err(|error| encode_error(&error))?;
        }
    }
    Ok(output)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_linear_window_follows_ps3_3() {
        let window = WindowParam {
            center: 40.0,
            width: 400.0,
            function: VoiFunction::Linear,
        };
        assert_eq!(apply_window(-1000.0, &window), 0);
        assert_eq!(apply_window(1000.0, &window), 255);
        let middle = apply_window(40.0, &window);
        assert!((126..=129).contains(&middle), "{middle}");
    }

    #[test]
    fn test_sigmoid_and_linear_exact_are_centered() {
        for function in [VoiFunction::Sigmoid, VoiFunction::LinearExact] {
            let window = WindowParam {
                center: 0.0,
                width: 100.0,
                function,
            };
            assert_eq!(apply_window(0.0, &window), 128);
        }
    }

    #[test]
    fn test_reads_signed_12_bit_samples() {
        // 0x0FFF with 12 bits stored is -1; the high nibble (overlay bits) is ignored.
        let data = [0xFF, 0xFF, 0x01, 0x00];
        assert_eq!(read_samples(&data, 16, 2, 12, true).unwrap(), vec![-1, 1]);
        assert_eq!(
            read_samples(&data, 16, 2, 16, false).unwrap(),
            vec![65535, 1]
        );
        assert!(read_samples(&data, 16, 3, 16, false).is_err());
    }

    #[test]
    fn test_ybr_gray_stays_gray() {
        let mut pixels = vec![100, 128, 128];
        ybr_to_rgb_in_place(&mut pixels);
        assert_eq!(pixels, vec![100, 100, 100]);
    }
}
