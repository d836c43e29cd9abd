package main

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/api"
	"github.com/tpcd/tpcd/engine"
	"github.com/tpcd/tpcd/localcluster"
	"github.com/tpcd/tpcd/metrics"
	"github.com/tpcd/tpcd/node"
)

// nodeLabel tells apart the nodes of a local cluster that share one metrics
// listener. Not "node": tpcd_participant_reachable has that label already.
const nodeLabel = "tpcd_node"

// nodeRegisterer registers a node's metrics with its name as nodeLabel.
func (o *observability) nodeRegisterer(name string) prometheus.Registerer {
	return prometheus.WrapRegistererWith(prometheus.Labels{nodeLabel: name}, o.reg)
}

// observe gives a local cluster's nodes their observers; without a
// listener it leaves the options as they are.
func (o *observability) observe(opts *localcluster.Options) {
	if o == nil {
		return
	}
	opts.CoordinatorObserver = metrics.NewCoordinator(o.nodeRegisterer(api.CoordinatorName))
	opts.ParticipantObserver = func(id engine.NodeID) node.Observer {
		return metrics.NewParticipant(o.nodeRegisterer(api.ParticipantName(id)))
	}
}

// clusterUp wires a running local cluster's gauges and status page, and
// makes /readyz ready when every node is.
func (o *observability) clusterUp(cl *localcluster.Cluster, logger *slog.Logger) {
	if o == nil {
		return
	}
	coord, parts := cl.Coordinator(), cl.Participants()
	metrics.WatchCoordinator(o.nodeRegisterer(api.CoordinatorName), coord, logger, nil)
	for i, p := range parts {
		metrics.WatchParticipant(o.nodeRegisterer(api.ParticipantName(engine.NodeID(i))), p, logger)
	}
	o.coord.Store(coord)
	// Each node's latest health from memory: a probe costs no database
	// round trip, as for a single node.
	o.health.SetReady(func() error {
		errs := []error{nodeHealth(api.CoordinatorName, coord.Health())}
		for i, p := range parts {
			errs = append(errs, nodeHealth(api.ParticipantName(engine.NodeID(i)), p.Health()))
		}
		return errors.Join(errs...)
	})
}

func nodeHealth(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}
