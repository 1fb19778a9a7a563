/*  edge_gen.h: one `generate` request from validation to FINAL (internal to
    services/edge-draft).

    edge_draft.c owns the shared state (draft model, vocabulary, endpoints)
    and the worker threads; each thread calls edge_gen_handle for every
    request it receives. Everything a generation allocates is freed before
    edge_gen_handle returns, and exactly one FINAL is sent, whatever
    happens.
*/
#ifndef SPLITMESH_EDGE_GEN_H
#define SPLITMESH_EDGE_GEN_H

#include <czmq.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include "drafter.h"
#include "metrics.h"
#include "mdp_client.h"
#include "mdp_worker.h"
#include "model.h"
#include "tokenizer.h"

//  Read-only after start-up, except the mutex and the stop flag.
typedef struct {
    char broker [256];          //  device broker
    char cloud [256];           //  cloud broker
    char cloud_near [300];      //  where cloud clients connect (link proxy or cloud)
    char instance [256];        //  for logs
    char model_path [512];      //  target model file
    char model_names [3][256];  //  names a request's `model` may give
    model_t *draft;             //  draft model, NULL when ngram only
    pthread_mutex_t draft_lock; //  held around draft forward calls
    tokenizer_t *tok;           //  the target's vocabulary
    int ctx;                    //  context limit, tokens
    int k_max;                  //  cap on draft length
    bool fixed_k;               //  no adaptation
    bool lookahead;             //  greedy: draft the next round during verify
    bool pipeline;              //  ... and send its verify before this one's answer
    float draft_min_p;          //  confidence stop of the model drafter (0: off)
    int timeout_ms;             //  per attempt of one call
    int heartbeat_ms;           //  MDP heartbeat
    bool verbose;               //  log each round
    atomic_bool stopping;       //  set when the actor ends
    metrics_t *metrics;         //  publisher (NULL: none); thread-safe
    //  Privacy full: the target's final norm + head, loaded from model_path
    //  (W8, as cloud-target's default) on the first full request.
    model_t *head;              //  NULL until then; owned, freed at stop
    pthread_mutex_t head_lock;  //  held around loading and model_head calls
    char head_error [256];      //  why loading failed (then every full request is 500)
} edge_shared_t;

//  Handles one request body from `client`: validates, runs the generation,
//  sends PARTIALs and one FINAL (or an error reply) through worker. dev
//  and cloud are this thread's clients of the device and cloud brokers.
//  Nothing is taken over: the caller destroys body and client.
void edge_gen_handle (edge_shared_t *sh, mdp_worker_t *worker, zframe_t *client,
                      zmsg_t *body, mdp_client_t *dev, mdp_client_t *cloud);

#endif
