// The tiny demo-format model of the worker's tests (scheduler, end-to-end): the whole path runs in
// milliseconds per token on 2 cores, with Engram tables of a few thousand rows.
#ifndef ENGRAM_TESTS_MODEL_TINY_MODEL_H_
#define ENGRAM_TESTS_MODEL_TINY_MODEL_H_

#include "model/demo_model.h"

namespace engram::testing {

// Options for WriteDemoModel with a context window of `max_position_embeddings` tokens.
inline DemoModelOptions TinyModelOptions(int max_position_embeddings) {
  DemoModelOptions o;
  o.hidden_size = 32;
  o.intermediate_size = 64;
  o.num_hidden_layers = 2;
  o.num_attention_heads = 2;
  o.num_key_value_heads = 1;
  o.max_position_embeddings = max_position_embeddings;
  o.engram_layer_ids = {0, 1};
  o.engram_n_heads = 2;
  o.engram_head_dim = 16;
  o.engram_vocab_size = 997;
  return o;
}

}  // namespace engram::testing

#endif  // ENGRAM_TESTS_MODEL_TINY_MODEL_H_
