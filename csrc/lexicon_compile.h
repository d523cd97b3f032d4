// Table builders behind compile_lexicon: dedupe tokenized words into entries, group entries by
// translation, and lay the entries out as the CSR token-id trie that LexiconTrie scans.
//
// Pure C++17 (no pybind11); bindings.cpp wraps them. Inputs are ragged rows in CSR form
// (offsets of n+1 int64, flat values); every function checks its offsets and ids and throws
// std::invalid_argument on the first problem, so Python never hands a bad array to a loop.
#pragma once

#include <cstdint>
#include <vector>

namespace prealign {

// Distinct rows of a ragged int32 array in first-occurrence order: *inverse (n,) maps row i to
// its distinct row number, *first (u,) holds the first row index of each distinct row.
void DedupeRows(const int64_t* offsets, int64_t n, const int32_t* flat, int64_t flat_size,
                std::vector<int32_t>* inverse, std::vector<int64_t>* first);

// Connected components of the undirected graph whose edges are node i -> flat[offsets[i] ..
// offsets[i+1]), numbered in the order of their smallest node (node 0's component is 0).
std::vector<int32_t> ConnectedComponents(const int64_t* offsets, int64_t n, const int32_t* flat,
                                         int64_t flat_size);

struct TrieArrays {
  std::vector<int64_t> child_offsets;
  std::vector<int32_t> child_tokens;
  std::vector<int32_t> child_nodes;
  std::vector<int32_t> node_entry;
};

// The trie over the rows i with include[i] != 0, inserted in row order: node 0 is the root,
// nodes are numbered as the insertion creates them, each node's children sorted by token, and
// node_entry[node] the row that ends there (-1 for none). Rows must be non-empty, distinct and
// hold non-negative tokens.
TrieArrays BuildTrie(const int64_t* offsets, int64_t n, const int32_t* flat, int64_t flat_size,
                     const uint8_t* include);

}  // namespace prealign
