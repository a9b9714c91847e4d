//! Search requests, their execution on the index, and results.
//!
//! The query string: plain words are ANDed, each found in any text value or person-name
//! component, case- and accent-insensitively; `"left lower lobe"` is a phrase. A word of four
//! characters or more also matches person-name components within one edit (two from eight
//! characters; a transposition is one edit): `Kowlaski` finds `Kowalski`, `Helen` finds
//! `Hélène`. Report text is not fuzzy: fuzzy report words match too much. A query using
//! tantivy's syntax (`-word`, `a OR b`, `field:value`, `word*`) is parsed by tantivy's query
//! parser as it is, without typo tolerance.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tantivy::collector::{Count, FacetCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, FuzzyTermQuery, Occur, Query, QueryParser, RangeQuery,
    TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption, Value};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::TokenStream;
use tantivy::{DocAddress, Order, Searcher, TantivyDocument, Term};

use crate::document::StudySummary;
use crate::error::{SearchError, SearchErrorKind, SearchResult};
use crate::index::SearchIndex;
use crate::schema::FOLDED_TOKENIZER;

/// The most results one page may hold.
pub const MAX_LIMIT: usize = 200;
/// The deepest page start accepted (deep paging is costly; narrow the query instead).
pub const MAX_OFFSET: usize = 10_000;

/// How results are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// BM25 relevance, best first (the default).
    #[default]
    Relevance,
    /// Study Date, newest first; studies without a date last.
    DateDesc,
    /// Study Date, oldest first.
    DateAsc,
}

/// One search. Filters are exact and ANDed; values within one filter are ORed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchRequest {
    /// The query string; empty matches every study.
    pub query: String,
    pub modalities: Vec<String>,
    pub sources: Vec<String>,
    pub institutions: Vec<String>,
    /// Inclusive Study Date bounds, `YYYYMMDD` as a number.
    pub date_from: Option<u64>,
    pub date_to: Option<u64>,
    pub sort: SortOrder,
    pub offset: usize,
    pub limit: usize,
}

impl SearchRequest {
    /// The query parameters of `GET /api/search` that [`crate::parse_parameters`] turns back
    /// into this request (what a remote client sends).
    pub fn to_query_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("q", self.query.clone())];
        pairs.extend(
            self.modalities
                .iter()
                .map(|value| ("modality", value.clone())),
        );
        pairs.extend(self.sources.iter().map(|value| ("source", value.clone())));
        pairs.extend(
            self.institutions
                .iter()
                .map(|value| ("institution", value.clone())),
        );
        if self.date_from.is_some() || self.date_to.is_some() {
            let bound = |date: Option<u64>| date.map(|date| date.to_string()).unwrap_or_default();
            pairs.push((
                "date",
                format!("{}-{}", bound(self.date_from), bound(self.date_to)),
            ));
        }
        let sort = match self.sort {
            SortOrder::Relevance => "relevance",
            SortOrder::DateDesc => "date_desc",
            SortOrder::DateAsc => "date_asc",
        };
        pairs.push(("sort", sort.to_owned()));
        pairs.push(("offset", self.offset.to_string()));
        pairs.push(("limit", self.limit.to_string()));
        pairs
    }
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            query: String::new(),
            modalities: Vec::new(),
            sources: Vec::new(),
            institutions: Vec::new(),
            date_from: None,
            date_to: None,
            sort: SortOrder::Relevance,
            offset: 0,
            limit: 20,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResponse {
    /// How many studies match (all pages).
    pub total: u64,
    pub offset: usize,
    pub limit: usize,
    pub took_ms: f64,
    pub hits: Vec<SearchHit>,
    /// Counts per modality, source and institution over all matching studies.
    pub facets: BTreeMap<String, BTreeMap<String, u64>>,
    /// The last catalog event reflected in these results.
    pub indexed_sequence: i64,
}

/// One matching study.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchHit {
    pub study_instance_uid: String,
    /// BM25 score (relevance order only).
    pub score: Option<f32>,
    /// `YYYYMMDD`.
    pub study_date: Option<String>,
    pub modalities: Vec<String>,
    pub sources: Vec<String>,
    pub institutions: Vec<String>,
    /// The best fragment of the study's text, HTML-escaped, matches in `<b>`.
    pub snippet: String,
    #[serde(flatten)]
    pub summary: StudySummary,
}

impl SearchIndex {
    /// Runs `request` on the committed index. Blocking (CPU-bound); fails with
    /// [`SearchErrorKind::InvalidRequest`] naming `q` when the query does not parse.
    pub fn search(&self, request: &SearchRequest) -> SearchResult<SearchResponse> {
        let started = Instant::now();
        if request.limit == 0 || request.limit > MAX_LIMIT {
            return Err(SearchError::invalid_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        if request.offset > MAX_OFFSET {
            return Err(SearchError::invalid_request(format!(
                "offset must be at most {MAX_OFFSET}"
            )));
        }
        let searcher = self.reader.searcher();
        let text_query = self.text_query(&request.query)?;
        let query = self.with_filters(text_query.box_clone(), request);
        let mut facet_collector = FacetCollector::for_field("facets");
        for facet_root in ["/modality", "/source", "/institution"] {
            facet_collector.add_facet(facet_root);
        }
        let top_docs = TopDocs::with_limit(request.limit).and_offset(request.offset);
        let index_error = |error| SearchError::index("failed to run a search", error);
        let (total, addresses, facet_counts) = match request.sort {
            SortOrder::Relevance => {
                let (total, top, facet_counts) = searcher
                    .search(&query, &(Count, top_docs.order_by_score(), facet_collector))
                    .map_err(index_error)?;
                let addresses = top
                    .into_iter()
                    .map(|(score, address)| (Some(score), address))
                    .collect::<Vec<_>>();
                (total, addresses, facet_counts)
            }
            SortOrder::DateDesc | SortOrder::DateAsc => {
                let order = if request.sort == SortOrder::DateDesc {
                    Order::Desc
                } else {
                    Order::Asc
                };
                let (total, top, facet_counts) = searcher
                    .search(
                        &query,
                        &(
                            Count,
                            top_docs.order_by_fast_field::<u64>("study_date", order),
                            facet_collector,
                        ),
                    )
                    .map_err(index_error)?;
                let addresses = top
                    .into_iter()
                    .map(|(_date, address)| (None, address))
                    .collect::<Vec<_>>();
                (total, addresses, facet_counts)
            }
        };
        let mut snippet_generator =
            SnippetGenerator::create(&searcher, &*text_query, self.fields.text)
                .map_err(|error| SearchError::index("failed to prepare snippets", error))?;
        snippet_generator.set_max_num_chars(200);
        let hits = addresses
            .into_iter()
            .map(|(score, address)| self.hit(&searcher, &snippet_generator, score, address))
            .collect::<SearchResult<Vec<_>>>()?;
        let mut facets = BTreeMap::new();
        for facet_root in ["modality", "source", "institution"] {
            let counts = facet_counts
                .get(&format!("/{facet_root}"))
                .filter_map(|(facet, count)| {
                    facet
                        .to_path()
                        .last()
                        .map(|value| ((*value).to_owned(), count))
                })
                .collect();
            facets.insert(facet_root.to_owned(), counts);
        }
        Ok(SearchResponse {
            total: total as u64,
            offset: request.offset,
            limit: request.limit,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
            hits,
            facets,
            indexed_sequence: self.committed_sequence()?,
        })
    }

    fn text_query(&self, query: &str) -> SearchResult<Box<dyn Query>> {
        if query.trim().is_empty() {
            return Ok(Box::new(AllQuery));
        }
        let mut parser =
            QueryParser::for_index(&self.index, vec![self.fields.text, self.fields.names]);
        parser.set_conjunction_by_default();
        let parse = |text: &str| {
            parser
                .parse_query(text)
                .map_err(|error| SearchError::invalid_request(format!("q does not parse: {error}")))
        };
        // Queries with operators or field names go to the parser as they are; plain words and
        // quoted phrases are built here so that name words get typo tolerance.
        let Some(segments) = plain_segments(query) else {
            return parse(query);
        };
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for segment in segments {
            match segment {
                Segment::Phrase(phrase) => {
                    clauses.push((Occur::Must, parse(&format!("\"{phrase}\""))?))
                }
                Segment::Word(word) => {
                    for token in self.folded_tokens(&word) {
                        clauses.push((Occur::Must, self.word_query(&token)));
                    }
                }
            }
        }
        if clauses.is_empty() {
            return parse(query);
        }
        Ok(Box::new(BooleanQuery::new(clauses)))
    }

    /// One query word: exact in the text or the names, or within
    /// [`fuzzy_distance`] edits of a name component.
    fn word_query(&self, token: &str) -> Box<dyn Query> {
        let mut alternatives: Vec<(Occur, Box<dyn Query>)> = [self.fields.text, self.fields.names]
            .into_iter()
            .map(|field| {
                let term_query: Box<dyn Query> = Box::new(TermQuery::new(
                    Term::from_field_text(field, token),
                    IndexRecordOption::WithFreqs,
                ));
                (Occur::Should, term_query)
            })
            .collect();
        let distance = fuzzy_distance(token);
        if distance > 0 {
            alternatives.push((
                Occur::Should,
                Box::new(FuzzyTermQuery::new(
                    Term::from_field_text(self.fields.names, token),
                    distance,
                    true,
                )),
            ));
        }
        Box::new(BooleanQuery::new(alternatives))
    }

    fn folded_tokens(&self, text: &str) -> Vec<String> {
        let Some(mut analyzer) = self.index.tokenizers().get(FOLDED_TOKENIZER) else {
            return Vec::new();
        };
        let mut stream = analyzer.token_stream(text);
        let mut tokens = Vec::new();
        while stream.advance() {
            tokens.push(stream.token().text.clone());
        }
        tokens
    }

    fn with_filters(&self, text_query: Box<dyn Query>, request: &SearchRequest) -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text_query)];
        for (field, values) in [
            (
                self.fields.modality,
                request
                    .modalities
                    .iter()
                    .map(|value| value.to_uppercase())
                    .collect::<Vec<_>>(),
            ),
            (self.fields.source, request.sources.clone()),
            (self.fields.institution, request.institutions.clone()),
        ] {
            if !values.is_empty() {
                clauses.push((Occur::Must, filter(any_of(field, &values))));
            }
        }
        if request.date_from.is_some() || request.date_to.is_some() {
            let bound = |date: Option<u64>| match date {
                Some(date) => Bound::Included(Term::from_field_u64(self.fields.study_date, date)),
                None => Bound::Unbounded,
            };
            let range = RangeQuery::new(bound(request.date_from), bound(request.date_to));
            clauses.push((Occur::Must, filter(Box::new(range))));
        }
        if clauses.len() == 1 {
            return clauses.pop().expect("one clause").1;
        }
        Box::new(BooleanQuery::new(clauses))
    }

    fn hit(
        &self,
        searcher: &Searcher,
        snippet_generator: &SnippetGenerator,
        score: Option<f32>,
        address: DocAddress,
    ) -> SearchResult<SearchHit> {
        let document: TantivyDocument = searcher
            .doc(address)
            .map_err(|error| SearchError::index("failed to read a result", error))?;
        let strings = |field: Field| {
            document
                .get_all(field)
                .filter_map(|value| value.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        };
        let summary = document
            .get_first(self.fields.summary)
            .and_then(|value| value.as_str())
            .and_then(|text| serde_json::from_str(text).ok())
            .unwrap_or_default();
        Ok(SearchHit {
            study_instance_uid: strings(self.fields.study_uid)
                .into_iter()
                .next()
                .unwrap_or_default(),
            score,
            study_date: document
                .get_first(self.fields.study_date)
                .and_then(|value| value.as_u64())
                .map(|date| format!("{date:08}")),
            modalities: strings(self.fields.modality),
            sources: strings(self.fields.source),
            institutions: strings(self.fields.institution),
            snippet: snippet_generator.snippet_from_doc(&document).to_html(),
            summary,
        })
    }
}

/// The edits a name word may be away from an indexed name component: none for words of up
/// to three characters (`Li`, `Jon`, one ideograph would match far too much), one up to
/// seven, two from eight (`Kowalczyk` typed `Kovalcik`). A transposition counts as one edit.
fn fuzzy_distance(token: &str) -> u8 {
    match token.chars().count() {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

enum Segment {
    Word(String),
    Phrase(String),
}

/// Splits a query of plain words and quoted phrases; `None` when it uses the query syntax
/// (operators, field names, grouping, wildcards), which the parser then handles.
fn plain_segments(query: &str) -> Option<Vec<Segment>> {
    let mut segments = Vec::new();
    for (position, part) in query.split('"').enumerate() {
        if position % 2 == 1 {
            if !part.trim().is_empty() {
                segments.push(Segment::Phrase(part.replace('\\', " ")));
            }
            continue;
        }
        for word in part.split_whitespace() {
            let syntax = matches!(word, "AND" | "OR" | "NOT" | "IN")
                || word.starts_with(['+', '-'])
                || word.contains([':', '(', ')', '[', ']', '{', '}', '*', '~', '\\']);
            if syntax {
                return None;
            }
            segments.push(Segment::Word(word.to_owned()));
        }
    }
    if query.matches('"').count() % 2 == 1 {
        return None;
    }
    Some(segments)
}

/// A clause that filters without changing the relevance score.
fn filter(query: Box<dyn Query>) -> Box<dyn Query> {
    Box::new(BoostQuery::new(query, 0.0))
}

fn any_of(field: Field, values: &[String]) -> Box<dyn Query> {
    let clauses = values
        .iter()
        .map(|value| {
            let term_query: Box<dyn Query> = Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ));
            (Occur::Should, term_query)
        })
        .collect();
    Box::new(BooleanQuery::new(clauses))
}

impl SearchError {
    /// Returns whether the caller sent a bad request (HTTP 400) rather than the index failing.
    pub fn is_invalid_request(&self) -> bool {
        self.kind == SearchErrorKind::InvalidRequest
    }
}
