#include "lexicon_scan.h"

#include <algorithm>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>

namespace prealign {

namespace {

// Root children with token ids above this are looked up by binary search instead of the dense
// table, so a lexicon with a huge (or hostile) token id cannot allocate gigabytes.
constexpr int64_t kMaxDenseRoot = int64_t{1} << 22;

[[noreturn]] void Invalid(const std::string& what) {
  throw std::invalid_argument("invalid lexicon trie: " + what);
}

}  // namespace

LexiconTrie::LexiconTrie(std::vector<int64_t> child_offsets, std::vector<int32_t> child_tokens,
                         std::vector<int32_t> child_nodes, std::vector<int32_t> node_entry,
                         std::vector<uint8_t> token_classes)
    : child_offsets_(std::move(child_offsets)),
      child_tokens_(std::move(child_tokens)),
      child_nodes_(std::move(child_nodes)),
      node_entry_(std::move(node_entry)),
      token_classes_(std::move(token_classes)) {
  const int64_t num_nodes = static_cast<int64_t>(node_entry_.size());
  const int64_t num_edges = static_cast<int64_t>(child_tokens_.size());
  if (num_nodes < 1) Invalid("no root node");
  if (static_cast<int64_t>(child_offsets_.size()) != num_nodes + 1)
    Invalid("child_offsets must have num_nodes + 1 elements");
  if (static_cast<int64_t>(child_nodes_.size()) != num_edges)
    Invalid("child_nodes and child_tokens differ in length");
  if (child_offsets_.front() != 0 || child_offsets_.back() != num_edges)
    Invalid("child_offsets must start at 0 and end at the number of edges");
  for (int64_t n = 0; n < num_nodes; ++n) {
    const int64_t begin = child_offsets_[n], end = child_offsets_[n + 1];
    if (end < begin) Invalid("child_offsets must be non-decreasing");
    for (int64_t e = begin; e < end; ++e) {
      if (e > begin && child_tokens_[e] <= child_tokens_[e - 1])
        Invalid("children of a node must be sorted by token, without repeats");
      if (child_nodes_[e] < 1 || child_nodes_[e] >= num_nodes) Invalid("child node out of range");
    }
    if (node_entry_[n] < -1) Invalid("node_entry must be -1 or an entry id");
  }
  int64_t max_root_token = -1;
  for (int64_t e = child_offsets_[0]; e < child_offsets_[1]; ++e) {
    if (child_tokens_[e] >= 0 && child_tokens_[e] < kMaxDenseRoot)
      max_root_token = std::max<int64_t>(max_root_token, child_tokens_[e]);
  }
  root_child_.assign(static_cast<std::size_t>(max_root_token + 1), -1);
  for (int64_t e = child_offsets_[0]; e < child_offsets_[1]; ++e) {
    if (child_tokens_[e] >= 0 && child_tokens_[e] <= max_root_token)
      root_child_[static_cast<std::size_t>(child_tokens_[e])] = child_nodes_[e];
  }
}

int32_t LexiconTrie::Child(int32_t node, int64_t token) const {
  if (node == 0 && token >= 0 && token < static_cast<int64_t>(root_child_.size()))
    return root_child_[static_cast<std::size_t>(token)];
  // Token ids outside int32 cannot be in the trie (uint16 and int32 inputs never are).
  if (token < std::numeric_limits<int32_t>::min() || token > std::numeric_limits<int32_t>::max())
    return -1;
  const auto first = child_tokens_.begin() + child_offsets_[node];
  const auto last = child_tokens_.begin() + child_offsets_[node + 1];
  const auto it = std::lower_bound(first, last, static_cast<int32_t>(token));
  if (it == last || *it != token) return -1;
  return child_nodes_[static_cast<std::size_t>(it - child_tokens_.begin())];
}

template <typename T>
void LexiconTrie::Scan(const T* tokens, int64_t n, ScanMode mode, ScanResult* out) const {
  const bool word_mode = mode == ScanMode::kWord;
  int64_t i = 0;
  while (i < n) {
    if (word_mode && ClassOf(tokens[i]) != kWordStart) {
      ++i;
      continue;
    }
    int32_t node = 0;
    int64_t best_len = 0;
    int32_t best_entry = -1;
    for (int64_t j = i; j < n;) {
      node = Child(node, static_cast<int64_t>(tokens[j]));
      if (node < 0) break;
      ++j;
      const int32_t entry = node_entry_[static_cast<std::size_t>(node)];
      // Only an entry that ends at a word boundary counts; a longer walk may still find one.
      if (entry >= 0 && (!word_mode || j == n || ClassOf(tokens[j]) != kContinuation)) {
        best_len = j - i;
        best_entry = entry;
      }
    }
    if (best_len > 0) {
      out->starts.push_back(i);
      out->lengths.push_back(static_cast<int32_t>(best_len));
      out->entries.push_back(best_entry);
      i += best_len;
    } else {
      ++i;
    }
  }
}

template void LexiconTrie::Scan<int32_t>(const int32_t*, int64_t, ScanMode, ScanResult*) const;
template void LexiconTrie::Scan<uint16_t>(const uint16_t*, int64_t, ScanMode, ScanResult*) const;

}  // namespace prealign
