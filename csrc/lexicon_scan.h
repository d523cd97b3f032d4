// Dictionary-word scan over token-id streams: the hot loop behind Lexicon.scan().
//
// Pure C++17 (no pybind11, no torch) so it can be reused and tested on its own; the Python
// binding lives in bindings.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace prealign {

// Token classes; values must match megatron_prealign/lexicon/tokenizer.py.
enum TokenClass : uint8_t { kOther = 0, kWordStart = 1, kContinuation = 2 };

enum class ScanMode : int {
  // A match starts at a WORD_START token and ends where the next token is not CONTINUATION.
  kWord = 0,
  // Any position may start and end a match (scripts written without spaces).
  kLongestMatch = 1,
};

struct ScanResult {
  std::vector<int64_t> starts;
  std::vector<int32_t> lengths;
  std::vector<int32_t> entries;
};

// A token-id trie in CSR layout. Node 0 is the root; node n's children are
// child_tokens/child_nodes[child_offsets[n] : child_offsets[n+1]], sorted by token;
// node_entry[n] is the lexicon entry ending at n, or -1.
class LexiconTrie {
 public:
  // Validates the arrays (sizes, bounds, child order, class values) so that a corrupt lexicon
  // file can never make scan() read out of bounds; throws std::invalid_argument describing the
  // first problem.
  LexiconTrie(const std::vector<int64_t>& child_offsets, const std::vector<int32_t>& child_tokens,
              const std::vector<int32_t>& child_nodes, const std::vector<int32_t>& node_entry,
              std::vector<uint8_t> token_classes);

  // Appends every match in tokens[0:n] to *out: scanning left to right, the longest entry that
  // satisfies the mode's start/end rules; after a match the scan resumes right after it,
  // otherwise one token later. Matches never overlap. Ids outside the class table are OTHER.
  template <typename T>
  void Scan(const T* tokens, int64_t n, ScanMode mode, ScanResult* out) const;

  // Scans each of the documents that tile tokens[0:sum(doc_lengths)] on its own (no match
  // crosses a document end) and appends, per document, its matches as int32 triples
  // (start within the document, length, entry id) to *triples and 3 * (its match count) to
  // *values_per_document: the code-switch sidecar's layout, with no per-document round trip
  // to Python. Returns the summed match length. Throws std::invalid_argument when a length is
  // negative, the lengths overrun n, or a document is longer than int32 can index.
  template <typename T>
  int64_t ScanDocuments(const T* tokens, int64_t n, const int64_t* doc_lengths, int64_t num_docs,
                        ScanMode mode, std::vector<int32_t>* triples,
                        std::vector<int64_t>* values_per_document) const;

  int64_t num_nodes() const { return static_cast<int64_t>(nodes_.size()); }

 private:
  struct Edge {
    int32_t token;
    int32_t node;
  };

  // The scan loop; emit(start, length, entry) receives each match in order.
  template <typename T, typename Emit>
  void ScanWith(const T* tokens, int64_t n, ScanMode mode, Emit&& emit) const;

  int32_t Child(int32_t node, int64_t token) const;
  uint8_t ClassOf(int64_t token) const {
    return (token >= 0 && token < static_cast<int64_t>(token_classes_.size()))
               ? token_classes_[static_cast<std::size_t>(token)]
               : static_cast<uint8_t>(kOther);
  }

  // Everything the walk needs about a node in one 16-byte record, so that visiting a node
  // costs one cache miss rather than one per array.
  struct Node {
    int32_t edge_begin;
    int32_t num_children;
    int32_t entry;
    // A bit (1 << class) for each class among the children's tokens. After a word most walks
    // end because the next token is a WORD_START or OTHER and the node only has CONTINUATION
    // children: this byte settles that without searching the children.
    uint8_t child_classes;
  };

  std::vector<Node> nodes_;
  // Children as (token, node) pairs, so one lookup touches one cache line, not two arrays.
  std::vector<Edge> edges_;
  std::vector<uint8_t> token_classes_;
  // Dense first step: most scan positions fail at the root, and a direct table beats a binary
  // search over up to vocab_size root children.
  std::vector<int32_t> root_child_;
};

}  // namespace prealign
