package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/tpcd/tpcd/node"
)

var (
	poolConnsDesc = prometheus.NewDesc("tpcd_db_connections",
		"Connections of the node's pool to a database, by state (in_use: held by a transaction or a task; idle).", []string{"db", "state"}, nil)
	poolMaxDesc = prometheus.NewDesc("tpcd_db_max_connections",
		"The most connections the node's pool opens to a database (--max-conns).", []string{"db"}, nil)
	poolAcquiresDesc = prometheus.NewDesc("tpcd_db_acquires_total",
		"Connections taken from the pool.", []string{"db"}, nil)
	poolWaitedDesc = prometheus.NewDesc("tpcd_db_acquires_waited_total",
		"Connections taken from the pool that had to wait for one to be opened or given back: a pool often empty wants a larger --max-conns.", []string{"db"}, nil)
	poolWaitDesc = prometheus.NewDesc("tpcd_db_acquire_seconds_total",
		"Time spent taking connections from the pool.", []string{"db"}, nil)
)

// watchPools registers gauges and counters of dbs' connection pools with
// reg, read at every scrape (a pool's statistics are a few counters under
// its lock; no connection is taken).
func watchPools(reg prometheus.Registerer, dbs []node.Database) {
	reg.MustRegister(prometheus.CollectorFunc(func(ch chan<- prometheus.Metric) {
		for _, db := range dbs {
			st := db.Pool.Stat()
			ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.AcquiredConns()), db.Name, "in_use")
			ch <- prometheus.MustNewConstMetric(poolConnsDesc, prometheus.GaugeValue, float64(st.IdleConns()), db.Name, "idle")
			ch <- prometheus.MustNewConstMetric(poolMaxDesc, prometheus.GaugeValue, float64(st.MaxConns()), db.Name)
			ch <- prometheus.MustNewConstMetric(poolAcquiresDesc, prometheus.CounterValue, float64(st.AcquireCount()), db.Name)
			ch <- prometheus.MustNewConstMetric(poolWaitedDesc, prometheus.CounterValue, float64(st.EmptyAcquireCount()), db.Name)
			ch <- prometheus.MustNewConstMetric(poolWaitDesc, prometheus.CounterValue, st.AcquireDuration().Seconds(), db.Name)
		}
	}))
}
