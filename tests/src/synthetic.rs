//! Synthetic DICOM instances built in code: realistic hierarchy and tags, no real patient data.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

/// Describes one synthetic instance.
#[derive(Debug, Clone)]
pub struct SyntheticInstance {
    pub patient_id: String,
    pub issuer_of_patient_id: String,
    pub patient_name: String,
    pub study_instance_uid: String,
    pub study_date: String,
    pub study_time: String,
    pub accession_number: String,
    pub referring_physician_name: String,
    pub study_description: String,
    pub series_instance_uid: String,
    pub series_number: i32,
    pub modality: String,
    pub series_description: String,
    pub sop_instance_uid: String,
    pub instance_number: i32,
    pub rows: u16,
    /// 16-bit pixels: the pixel data is rows x columns x 2 bytes.
    pub columns: u16,
    /// One Request Attributes Sequence item with this Scheduled Procedure Step ID.
    pub scheduled_procedure_step_id: Option<String>,
}

impl SyntheticInstance {
    /// A CT instance `index` of series `series` of study `study`, with UIDs under 2.25 made
    /// unique by `seed`.
    pub fn ct(seed: u64, study: u32, series: u32, index: u32, rows: u16, columns: u16) -> Self {
        let root = format!("2.25.{seed}");
        Self {
            patient_id: format!("SYN{seed}-{study}"),
            issuer_of_patient_id: "SYNTHETIC".to_owned(),
            patient_name: format!("SYNTHETIC^PATIENT{study}"),
            study_instance_uid: format!("{root}.1.{study}"),
            study_date: format!("2024{:02}{:02}", 1 + study % 12, 1 + study % 28),
            study_time: "101500".to_owned(),
            accession_number: format!("ACC{study:06}"),
            referring_physician_name: "REFERRER^SYNTHETIC".to_owned(),
            study_description: "CT CHEST SYNTHETIC".to_owned(),
            series_instance_uid: format!("{root}.1.{study}.{series}"),
            series_number: series as i32,
            modality: "CT".to_owned(),
            series_description: "AXIAL".to_owned(),
            sop_instance_uid: format!("{root}.1.{study}.{series}.{index}"),
            instance_number: index as i32,
            rows,
            columns,
            scheduled_procedure_step_id: None,
        }
    }

    /// Encodes the instance as a Part 10 file (Explicit VR Little Endian) with deterministic
    /// pseudo-random pixel data.
    pub fn to_part10(&self) -> Vec<u8> {
        let text = |tag, vr, value: &str| DataElement::new(tag, vr, PrimitiveValue::from(value));
        let mut object = InMemDicomObject::from_element_iter([
            text(tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192"),
            text(tags::SOP_CLASS_UID, VR::UI, uids::CT_IMAGE_STORAGE),
            text(tags::SOP_INSTANCE_UID, VR::UI, &self.sop_instance_uid),
            text(tags::STUDY_DATE, VR::DA, &self.study_date),
            text(tags::STUDY_TIME, VR::TM, &self.study_time),
            text(tags::ACCESSION_NUMBER, VR::SH, &self.accession_number),
            text(tags::MODALITY, VR::CS, &self.modality),
            text(
                tags::REFERRING_PHYSICIAN_NAME,
                VR::PN,
                &self.referring_physician_name,
            ),
            text(tags::STUDY_DESCRIPTION, VR::LO, &self.study_description),
            text(tags::SERIES_DESCRIPTION, VR::LO, &self.series_description),
            text(tags::PATIENT_NAME, VR::PN, &self.patient_name),
            text(tags::PATIENT_ID, VR::LO, &self.patient_id),
            text(
                tags::ISSUER_OF_PATIENT_ID,
                VR::LO,
                &self.issuer_of_patient_id,
            ),
            text(tags::PATIENT_BIRTH_DATE, VR::DA, "19700101"),
            text(tags::PATIENT_SEX, VR::CS, "O"),
            text(tags::STUDY_INSTANCE_UID, VR::UI, &self.study_instance_uid),
            text(tags::SERIES_INSTANCE_UID, VR::UI, &self.series_instance_uid),
            text(tags::STUDY_ID, VR::SH, "1"),
            text(tags::SERIES_NUMBER, VR::IS, &self.series_number.to_string()),
            text(
                tags::INSTANCE_NUMBER,
                VR::IS,
                &self.instance_number.to_string(),
            ),
            text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(self.rows)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(self.columns)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12_u16)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11_u16)),
            DataElement::new(
                tags::PIXEL_REPRESENTATION,
                VR::US,
                PrimitiveValue::from(0_u16),
            ),
        ]);
        if let Some(step_id) = &self.scheduled_procedure_step_id {
            let item = InMemDicomObject::from_element_iter([text(
                tags::SCHEDULED_PROCEDURE_STEP_ID,
                VR::SH,
                step_id,
            )]);
            object.put(DataElement::new(
                tags::REQUEST_ATTRIBUTES_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![item]),
            ));
        }
        let num_pixel_bytes = usize::from(self.rows) * usize::from(self.columns) * 2;
        let mut state = (self.instance_number as u64) ^ 0x9E37_79B9_7F4A_7C15;
        let mut pixels = Vec::with_capacity(num_pixel_bytes + 8);
        while pixels.len() < num_pixel_bytes {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // 12-bit samples: keep the high nibble of each 16-bit word clear.
            pixels.extend_from_slice(&(state & 0x0FFF_0FFF_0FFF_0FFF).to_le_bytes());
        }
        pixels.truncate(num_pixel_bytes);
        object.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::from(pixels),
        ));
        let file = object
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                    .media_storage_sop_instance_uid(&self.sop_instance_uid),
            )
            .expect("synthetic meta is complete");
        let mut bytes = Vec::with_capacity(num_pixel_bytes + 4096);
        file.write_all(&mut bytes)
            .expect("writing to memory succeeds");
        bytes
    }
}
