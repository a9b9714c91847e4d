//! The tantivy schema: one document per study.

use tantivy::Index;
use tantivy::schema::{
    FAST, FacetOptions, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema,
    TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, SimpleTokenizer, TextAnalyzer,
};

/// The tokenizer of the text and name fields: words split on anything that is not a letter or
/// a digit, lowercased, accents folded to ASCII (`Jérôme` → `jerome`). Works for any script:
/// CJK runs stay one token each, which matches DICOM PN components.
pub(crate) const FOLDED_TOKENIZER: &str = "strata_folded";

/// Bumped when the schema or the tokenizer changes; an index of another version must be
/// rebuilt (`strata search rebuild`).
pub(crate) const SCHEMA_VERSION: u32 = 1;

/// The fields of the study document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fields {
    /// Study Instance UID, raw: the key that updates and deletes replace.
    pub study_uid: Field,
    /// All text values, folded; stored for snippets.
    pub text: Field,
    /// Person name components, folded; queried with fuzzy terms for typo tolerance.
    pub names: Field,
    /// Study Date as the number YYYYMMDD: range filters and date sorting.
    pub study_date: Field,
    /// Modalities in study, raw uppercase (exact filter).
    pub modality: Field,
    /// Issuer of Patient ID / Source AE Title values, raw (exact filter).
    pub source: Field,
    /// Institution names, raw (exact filter).
    pub institution: Field,
    /// Facets: `/modality/CT`, `/source/HOSP-A`, `/institution/...`.
    pub facets: Field,
    /// The result summary as JSON (stored only).
    pub summary: Field,
}

/// Builds the schema and the field handles.
pub(crate) fn build_schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let folded_indexing = TextFieldIndexing::default()
        .set_tokenizer(FOLDED_TOKENIZER)
        .set_index_option(IndexRecordOption::WithFreqsAndPositions);
    let fields = Fields {
        study_uid: builder.add_text_field("study_uid", STRING | STORED),
        text: builder.add_text_field(
            "text",
            TextOptions::default()
                .set_indexing_options(folded_indexing.clone())
                .set_stored(),
        ),
        names: builder.add_text_field(
            "names",
            TextOptions::default().set_indexing_options(folded_indexing),
        ),
        study_date: builder.add_u64_field("study_date", INDEXED | FAST | STORED),
        modality: builder.add_text_field("modality", STRING | STORED),
        source: builder.add_text_field("source", STRING | STORED),
        institution: builder.add_text_field("institution", STRING | STORED),
        facets: builder.add_facet_field("facets", FacetOptions::default()),
        summary: builder.add_text_field("summary", STORED),
    };
    (builder.build(), fields)
}

/// Registers the tokenizers the schema names; needed on every opened index.
pub(crate) fn register_tokenizers(index: &Index) {
    let analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(64))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build();
    index.tokenizers().register(FOLDED_TOKENIZER, analyzer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tantivy::tokenizer::TokenStream;

    fn tokens(text: &str) -> Vec<String> {
        let (schema, _) = build_schema();
        let index = Index::create_in_ram(schema);
        register_tokenizers(&index);
        let mut analyzer = index
            .tokenizers()
            .get(FOLDED_TOKENIZER)
            .expect("registered");
        let mut stream = analyzer.token_stream(text);
        let mut tokens = Vec::new();
        while stream.advance() {
            tokens.push(stream.token().text.clone());
        }
        tokens
    }

    #[test]
    fn test_folded_tokenizer_lowercases_and_strips_accents() {
        assert_eq!(tokens("Buc^Jérôme"), ["buc", "jerome"]);
        assert_eq!(tokens("MÜLLER-Lüdenscheidt"), ["muller", "ludenscheidt"]);
        assert_eq!(tokens("山田^太郎"), ["山田", "太郎"]);
    }
}
