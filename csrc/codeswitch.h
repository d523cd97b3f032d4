// Input-only code-switching of one sample window: the per-sample path of CodeSwitchGPTDataset.
// Semantics: megatron_prealign/data/README.md ("Label semantics", "Determinism"); the
// plain-Python oracle the tests check this against is tests/_codeswitch_reference.py.
//
// Pure C++17 (no pybind11, no numpy) like lexicon_scan.h; the binding lives in bindings.cpp.
#pragma once

#include <cstdint>
#include <vector>

namespace prealign {

// The flat arrays of a compiled lexicon (see LexiconArrays in codeswitch.py). Borrowed, not
// owned. They are not validated up front (that would cost O(entries) per sample): every offset
// ApplyCodeSwitch follows is bounds-checked when it is used.
struct CodeSwitchLexicon {
  const int64_t* entry_offsets;        // (num_entries + 1,)
  const int32_t* entry_flat;           // (entry_flat_size,)
  const int64_t* translation_offsets;  // (num_entries + 1,)
  const int32_t* translation_flat;     // (translation_flat_size,)
  int64_t num_entries;
  int64_t entry_flat_size;
  int64_t translation_flat_size;
};

// The code-switch sidecar next to a token dataset, borrowed. Document d's spans are the
// values[d] / 3 int32 triples (start, length, entry) at byte offset pointers[d] of the sidecar's
// .bin: read with pread() from the open file `fd` when fd >= 0 (megatron's mmap_bin_files=False),
// else in place from `flat` (the whole .bin, memory-mapped).
struct SidecarSpans {
  const int32_t* doc_lengths;  // (num_docs,) token count of each document of the token dataset
  const int32_t* values;       // (num_docs,)
  const int64_t* pointers;     // (num_docs,)
  int64_t num_docs;
  const int32_t* flat = nullptr;
  int64_t flat_size = 0;  // int32 items of `flat`
  int fd = -1;
};

// Decision-level counts (before the cut to seq_length), as CodeSwitchStats.
struct CodeSwitchCounts {
  int64_t switched_words = 0;
  int64_t eligible_words = 0;
  int64_t switched_tokens = 0;
};

// splitmix64 finalizer (wraps modulo 2**64).
inline uint64_t SplitMix64(uint64_t x) {
  uint64_t z = x + 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

// key(seed, sample) = splitmix64(splitmix64(seed) ^ sample).
inline uint64_t SampleKey(uint64_t seed, uint64_t sample_index) {
  return SplitMix64(SplitMix64(seed) ^ sample_index);
}

// Code-switches window[0:window_length] with the spans (starts/lengths/entries, num_spans each,
// sorted, disjoint, window coordinates) and writes tokens/labels/loss_mask, seq_length each.
// A span may switch only if start >= 0 and start + length < valid_length (the token after it is
// a real token of the window). `ratio` must lie in [0, 1] and seq_length be >= 0 (the caller
// checks them once).
//
// Throws std::invalid_argument (nothing written is meaningful then) when: window_length < 2,
// valid_length outside [0, window_length], a span length <= 0, spans unsorted or overlapping, an
// entry id outside [0, num_entries), or a lexicon offset that points outside its flat array.
CodeSwitchCounts ApplyCodeSwitch(const int64_t* window, int64_t window_length,
                                 int64_t valid_length, const int32_t* starts,
                                 const int32_t* lengths, const int32_t* entries,
                                 int64_t num_spans, const CodeSwitchLexicon& lexicon, double ratio,
                                 uint64_t seed, uint64_t sample_index, int64_t seq_length,
                                 int64_t pad_id, int64_t* tokens, int64_t* labels,
                                 float* loss_mask);

// The switch spans of one GPTDataset sample window, read from the code-switch sidecar.
//
// Mirrors GPTDataset's document walk: the window is documents
// document_index[doc_begin..doc_end] (the first from token offset_begin, the last up to token
// offset_end + extra_token, exclusive), concatenated, then GPTDataset's pad ids. A span is kept
// when it lies fully inside its part of the window; kept spans are appended to
// *starts/*lengths/*entries in window coordinates.
//
// Returns the number of real tokens of the window (valid_length of ApplyCodeSwitch).
// Throws std::invalid_argument when the walk yields more than window_size tokens, an index is
// out of range, the sidecar file cannot be read, or a document's last span ends after the
// document (a foreign sidecar); the message of the latter starts with "span (".
template <typename DocIndex>
int64_t WindowSpans(const DocIndex* document_index, int64_t document_index_size,
                    int64_t doc_begin, int64_t offset_begin, int64_t doc_end, int64_t offset_end,
                    int64_t extra_token, int64_t window_size, const SidecarSpans& sidecar,
                    std::vector<int32_t>* starts, std::vector<int32_t>* lengths,
                    std::vector<int32_t>* entries);

// GPTDataset's last step on a sample: a position whose label is the pad id gets no loss, then
// pad ids become 0 in tokens and labels (megatron's pad id may be -1, which indexes no
// embedding row). n elements each.
void MaskPadLikeGPTDataset(int64_t* tokens, int64_t* labels, float* loss_mask, int64_t n,
                           int64_t pad_id);

}  // namespace prealign
