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
constexpr int64_t kLinearSearchMax = 8;
constexpr int64_t kMaxReserve = int64_t{1} << 22;

[[noreturn]] void Invalid(const std::string& what) {
  throw std::invalid_argument("invalid lexicon trie: " + what);
}

}  // namespace

LexiconTrie::LexiconTrie(const std::vector<int64_t>& child_offsets,
                         const std::vector<int32_t>& child_tokens,
                         const std::vector<int32_t>& child_nodes,
                         const std::vector<int32_t>& node_entry,
                         std::vector<uint8_t> token_classes)
    : token_classes_(std::move(token_classes)) {
  const int64_t num_nodes = static_cast<int64_t>(node_entry.size());
  const int64_t num_edges = static_cast<int64_t>(child_tokens.size());
  if (num_nodes < 1) Invalid("no root node");
  if (num_nodes > std::numeric_limits<int32_t>::max()) Invalid("more than 2^31-1 nodes");
  if (static_cast<int64_t>(child_offsets.size()) != num_nodes + 1)
    Invalid("child_offsets must have num_nodes + 1 elements");
  if (static_cast<int64_t>(child_nodes.size()) != num_edges)
    Invalid("child_nodes and child_tokens differ in length");
  if (child_offsets.front() != 0 || child_offsets.back() != num_edges)
    Invalid("child_offsets must start at 0 and end at the number of edges");
  if (num_edges >= num_nodes) Invalid("a trie has fewer edges than nodes");
  // The child masks below shift by the class value: anything above the three classes would be
  // an undefined shift and a silently unmatchable token.
  for (const uint8_t cls : token_classes_)
    if (cls > kContinuation)
      Invalid("token classes must be 0 (other), 1 (word start) or 2 (continuation), got " +
              std::to_string(cls));
  edges_.resize(static_cast<std::size_t>(num_edges));
  nodes_.resize(static_cast<std::size_t>(num_nodes));
  for (int64_t n = 0; n < num_nodes; ++n) {
    const int64_t begin = child_offsets[n], end = child_offsets[n + 1];
    if (end < begin) Invalid("child_offsets must be non-decreasing");
    // Checked before the edges are read: a later node's decrease is found too late for that.
    if (end > num_edges) Invalid("child_offsets must not exceed the number of edges");
    Node& node = nodes_[n];
    node.edge_begin = static_cast<int32_t>(begin);
    node.num_children = static_cast<int32_t>(end - begin);
    node.entry = node_entry[n];
    node.child_classes = 0;
    if (node.entry < -1) Invalid("node_entry must be -1 or an entry id");
    for (int64_t e = begin; e < end; ++e) {
      if (e > begin && child_tokens[e] <= child_tokens[e - 1])
        Invalid("children of a node must be sorted by token, without repeats");
      if (child_nodes[e] < 1 || child_nodes[e] >= num_nodes) Invalid("child node out of range");
      edges_[e] = Edge{child_tokens[e], child_nodes[e]};
      node.child_classes |= static_cast<uint8_t>(1u << ClassOf(child_tokens[e]));
    }
  }
  int64_t max_root_token = -1;
  const Node& root = nodes_[0];
  for (int32_t e = root.edge_begin; e < root.edge_begin + root.num_children; ++e) {
    if (edges_[e].token >= 0 && edges_[e].token < kMaxDenseRoot)
      max_root_token = std::max<int64_t>(max_root_token, edges_[e].token);
  }
  root_child_.assign(static_cast<std::size_t>(max_root_token + 1), -1);
  for (int32_t e = root.edge_begin; e < root.edge_begin + root.num_children; ++e) {
    if (edges_[e].token >= 0 && edges_[e].token <= max_root_token)
      root_child_[static_cast<std::size_t>(edges_[e].token)] = edges_[e].node;
  }
}

int32_t LexiconTrie::Child(int32_t node, int64_t token) const {
  if (node == 0 && token >= 0 && token < static_cast<int64_t>(root_child_.size()))
    return root_child_[static_cast<std::size_t>(token)];
  // Token ids outside int32 cannot be in the trie (uint16 and int32 inputs never are).
  if (token < std::numeric_limits<int32_t>::min() || token > std::numeric_limits<int32_t>::max())
    return -1;
  const int32_t t = static_cast<int32_t>(token);
  const Node& nd = nodes_[static_cast<std::size_t>(node)];
  const Edge* first = edges_.data() + nd.edge_begin;
  const Edge* last = first + nd.num_children;
  if (nd.num_children <= kLinearSearchMax) {
    // Short child lists (the common case below the root) are faster to scan than to bisect.
    for (; first != last && first->token <= t; ++first)
      if (first->token == t) return first->node;
    return -1;
  }
  const Edge* it =
      std::lower_bound(first, last, t, [](const Edge& e, int32_t v) { return e.token < v; });
  return (it != last && it->token == t) ? it->node : -1;
}

template <typename T, typename Emit>
void LexiconTrie::ScanWith(const T* tokens, int64_t n, ScanMode mode, Emit&& emit) const {
  const bool word_mode = mode == ScanMode::kWord;
  int64_t i = 0;
  while (i < n) {
    // The class of tokens[j] is looked up once and serves twice: as the boundary test after
    // the token before it, and as the child-class filter of the next step.
    uint8_t cls = ClassOf(static_cast<int64_t>(tokens[i]));
    if (word_mode && cls != kWordStart) {
      ++i;
      continue;
    }
    int32_t node = 0;
    int64_t best_len = 0;
    int32_t best_entry = -1;
    for (int64_t j = i; j < n;) {
      if (!(nodes_[static_cast<std::size_t>(node)].child_classes & (1u << cls))) break;
      node = Child(node, static_cast<int64_t>(tokens[j]));
      if (node < 0) break;
      ++j;
      cls = j < n ? ClassOf(static_cast<int64_t>(tokens[j])) : static_cast<uint8_t>(kOther);
      const int32_t entry = nodes_[static_cast<std::size_t>(node)].entry;
      // Only an entry that ends at a word boundary counts; a longer walk may still find one.
      if (entry >= 0 && (!word_mode || j == n || cls != kContinuation)) {
        best_len = j - i;
        best_entry = entry;
      }
    }
    if (best_len > 0) {
      emit(i, best_len, best_entry);
      i += best_len;
    } else {
      ++i;
    }
  }
}

template <typename T>
void LexiconTrie::Scan(const T* tokens, int64_t n, ScanMode mode, ScanResult* out) const {
  // Matches never outnumber tokens. Reserving that bound up front (capped) avoids the copy
  // chain of repeated growth; pages of the reservation that are never written are never
  // faulted in, so a sparse result costs address space, not memory.
  const std::size_t reserve = static_cast<std::size_t>(std::min<int64_t>(n, kMaxReserve));
  out->starts.reserve(out->starts.size() + reserve);
  out->lengths.reserve(out->lengths.size() + reserve);
  out->entries.reserve(out->entries.size() + reserve);
  ScanWith(tokens, n, mode, [out](int64_t start, int64_t length, int32_t entry) {
    out->starts.push_back(start);
    out->lengths.push_back(static_cast<int32_t>(length));
    out->entries.push_back(entry);
  });
}

template <typename T>
int64_t LexiconTrie::ScanDocuments(const T* tokens, int64_t n, const int64_t* doc_lengths,
                                   int64_t num_docs, ScanMode mode, std::vector<int32_t>* triples,
                                   std::vector<int64_t>* values_per_document) const {
  for (int64_t d = 0, end = 0; d < num_docs; ++d) {
    if (doc_lengths[d] < 0 || doc_lengths[d] > n - end)
      throw std::invalid_argument("document lengths must be non-negative and sum to at most the " +
                                  std::to_string(n) + " tokens (document " + std::to_string(d) +
                                  ")");
    if (doc_lengths[d] > std::numeric_limits<int32_t>::max())
      throw std::invalid_argument("document " + std::to_string(d) + " has more than 2^31-1 tokens");
    end += doc_lengths[d];
  }
  int64_t offset = 0;
  values_per_document->reserve(values_per_document->size() + static_cast<std::size_t>(num_docs));
  // At most one match per token: 3 values per token bounds the growth (see Scan on reserving).
  triples->reserve(triples->size() + static_cast<std::size_t>(std::min<int64_t>(3 * n, 3 * kMaxReserve)));
  int64_t covered = 0;
  for (int64_t d = 0; d < num_docs; ++d) {
    const std::size_t before = triples->size();
    ScanWith(tokens + offset, doc_lengths[d], mode,
             [triples, &covered](int64_t start, int64_t length, int32_t entry) {
               triples->push_back(static_cast<int32_t>(start));
               triples->push_back(static_cast<int32_t>(length));
               triples->push_back(entry);
               covered += length;
             });
    values_per_document->push_back(static_cast<int64_t>(triples->size() - before));
    offset += doc_lengths[d];
  }
  return covered;
}

template int64_t LexiconTrie::ScanDocuments<int32_t>(const int32_t*, int64_t, const int64_t*,
                                                     int64_t, ScanMode, std::vector<int32_t>*,
                                                     std::vector<int64_t>*) const;
template int64_t LexiconTrie::ScanDocuments<uint16_t>(const uint16_t*, int64_t, const int64_t*,
                                                      int64_t, ScanMode, std::vector<int32_t>*,
                                                      std::vector<int64_t>*) const;
template void LexiconTrie::Scan<int32_t>(const int32_t*, int64_t, ScanMode, ScanResult*) const;
template void LexiconTrie::Scan<uint16_t>(const uint16_t*, int64_t, ScanMode, ScanResult*) const;

}  // namespace prealign
